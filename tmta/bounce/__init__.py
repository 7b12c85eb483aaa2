"""
bounce: non-delivery notices.  qmgr hands it the recipients that failed
for good; it writes a notice to the sender through cleanup and answers
only once the notice is queued, so a failure is never silently dropped.
No notice goes to the null sender.
"""
