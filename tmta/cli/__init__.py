"""
The operator's commands: C{tmta} and its subcommands.
"""
