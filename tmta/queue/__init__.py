"""
The mail queue: directories, queue ids, queue files and the fsync
discipline that keeps acknowledged mail safe.

Private: not part of tmta's public API (which L{tmta} lists); it may
change in any release.
"""
