"""
smtpd: the SMTP server.

Its own protocol on Twisted (twisted.mail's server lacks SIZE,
PIPELINING and 8BITMIME and answers pipelined commands out of order): it
speaks ESMTP without screwing up, applies relay control and recipient
checks, and streams each message to cleanup as it arrives, answering 250
only once cleanup has it on disk.
"""
