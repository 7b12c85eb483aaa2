"""
Tests for L{tmta.mail.dsn}: RFC 3461's parameters and xtext.
"""

from twisted.trial.unittest import SynchronousTestCase

from tmta.mail.dsn import (
    DSNError,
    notifies,
    parseEnvid,
    parseNotify,
    parseOrcpt,
    parseRet,
    splitOrcpt,
    xtextDecode,
    xtextEncode,
)


class XtextTests(SynchronousTestCase):
    def test_roundTrip(self):
        for text in ["user@example.com", "a+b=c@example.com", "odd\\name@x", "~!#$%"]:
            self.assertEqual(xtextDecode(xtextEncode(text)), text)

    def test_encode(self):
        self.assertEqual(xtextEncode("a+b=c d"), "a+2Bb+3Dc+20d")

    def test_badXtext(self):
        """
        A space, an C{=}, a lone C{+} or lower-case hex is not xtext.
        """
        for bad in ["a b", "a=b", "a+", "a+2", "a+2b", "a+GG", "caf\xe9"]:
            with self.assertRaises(DSNError, msg=bad):
                xtextDecode(bad)


class ParameterTests(SynchronousTestCase):
    def test_notify(self):
        self.assertEqual(parseNotify("never"), "NEVER")
        self.assertEqual(parseNotify("delay,SUCCESS"), "SUCCESS,DELAY")
        self.assertEqual(parseNotify("failure, failure"), "FAILURE")
        for bad in ["", "NEVER,SUCCESS", "SOMETIMES", "SUCCESS,"]:
            with self.assertRaises(DSNError, msg=bad):
                parseNotify(bad)

    def test_orcpt(self):
        self.assertEqual(parseOrcpt("rfc822;a+2Bb@example.com"), "rfc822;a+b@example.com")
        self.assertEqual(parseOrcpt("RFC822;x@y"), "rfc822;x@y")
        for bad in ["x@y", ";x@y", "rfc 822;x@y", "rfc822;", "rfc822;a b",
                    "rfc822;" + "a" * 501]:
            with self.assertRaises(DSNError, msg=bad):
                parseOrcpt(bad)

    def test_ret(self):
        self.assertEqual(parseRet("hdrs"), "HDRS")
        self.assertEqual(parseRet("Full"), "FULL")
        with self.assertRaises(DSNError):
            parseRet("SOME")

    def test_envid(self):
        self.assertEqual(parseEnvid("QQ+2B1"), "QQ+1")
        for bad in ["", "a" * 101, "a+0A", "a b"]:
            with self.assertRaises(DSNError, msg=bad):
                parseEnvid(bad)

    def test_notifies(self):
        """
        Without NOTIFY, failures and delays are reported and successes
        not; with it, only what it names.
        """
        self.assertTrue(notifies("", "FAILURE"))
        self.assertTrue(notifies("", "DELAY"))
        self.assertFalse(notifies("", "SUCCESS"))
        self.assertTrue(notifies("SUCCESS,FAILURE", "SUCCESS"))
        self.assertFalse(notifies("SUCCESS,FAILURE", "DELAY"))
        self.assertFalse(notifies("NEVER", "FAILURE"))

    def test_splitOrcpt(self):
        self.assertEqual(splitOrcpt("rfc822;a@b"), ("rfc822", "a@b"))
        self.assertIsNone(splitOrcpt("rfc822;"))
        self.assertIsNone(splitOrcpt("nothing"))
