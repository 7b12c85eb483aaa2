"""
pickup: takes mail posted with C{tmta-sendmail} from C{maildrop/} to
cleanup.
"""
