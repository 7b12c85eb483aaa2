"""
The mail queue: directories, queue ids, queue files and the fsync
discipline that keeps acknowledged mail safe.
"""
