"""The command-line interface: one module per command; ``app`` wires them and maps errors to exit codes."""
