"""
twistd glue for tmta.
"""
