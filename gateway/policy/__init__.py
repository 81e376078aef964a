"""Sharing agreements: what may flow from which node to which, and why.

Agreements are data: YAML files in ``policies/`` (schema in
``policies/README.md``), loaded and validated by :mod:`.loader` into the typed
model of :mod:`.model`; :mod:`.overlap` warns where agreements overlap.
:mod:`.evaluate` makes the decision for one record and one receiver (default
deny, with the rule and reason either way), :mod:`.fields` withholds fields
from the copy a receiver gets, and :mod:`.holder` keeps the set a running node
enforces, reloading it safely. :mod:`.outcome` computes who receives each
record of a sample file, the demo's specification.
"""

from gateway.policy.evaluate import PolicySet
from gateway.policy.fields import apply_withholding
from gateway.policy.holder import PolicyHolder, ReloadResult
from gateway.policy.loader import PolicyCheck, check_policies, load_policies
from gateway.policy.model import Agreement, Decision, Flow, NodeInfo, WithholdRule
from gateway.policy.outcome import expected_receivers

__all__ = [
    "Agreement",
    "Decision",
    "Flow",
    "NodeInfo",
    "PolicyCheck",
    "PolicyHolder",
    "PolicySet",
    "ReloadResult",
    "WithholdRule",
    "apply_withholding",
    "check_policies",
    "expected_receivers",
    "load_policies",
]
