"""
cleanup: the only writer of queue files.

Front ends (smtpd, bounce) stream a message to cleanup over AMP; cleanup
canonicalises the envelope addresses through trivial-rewrite, adds the
headers a message lacks (Received, Date, Message-ID, From), stops mail
loops (C{hopcount_limit}), writes the queue file into C{incoming/},
fsyncs it and its directory, answers, and wakes qmgr.
"""
