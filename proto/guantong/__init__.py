"""Wire contract of the federation, generated from the .proto files beside this one."""
