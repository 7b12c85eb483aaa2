"""
The master: runs the worker processes of master.cf's services on demand.
"""
