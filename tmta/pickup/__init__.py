"""
pickup: takes mail posted with C{tmta-sendmail} from C{maildrop/} to
cleanup.

Private: not part of tmta's public API (which L{tmta} lists); it may
change in any release.
"""
