"""
Packaging: C{python -m build} makes an sdist and a wheel that C{twine
check} accepts, and the wheel, installed into a fresh virtualenv by an
ordinary user, gives C{twistd tmta} with the plugin cache regenerated
without errors.
"""

import glob
import os
import pwd
import shutil
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import REPO, shortTemporaryDirectory, testAccount


class PackagingTests(SynchronousTestCase):
    def test_buildCheckInstall(self):
        for module in ("build", "twine"):
            if subprocess.run([sys.executable, "-c", f"import {module}"]).returncode:
                raise SkipTest(f"{module} is not installed (pip install '.[test]')")
        if os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"):
            raise SkipTest("installing as an ordinary user needs root to become one")
        base = shortTemporaryDirectory(self)
        dist = os.path.join(base, "dist")
        source = os.path.join(base, "source")
        # Build from a copy: the build writes into the tree it builds.
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
            "_trial_temp*", "*.pyc", "__pycache__", "build", "dist", "*.egg-info", ".git"))
        built = subprocess.run([sys.executable, "-m", "build", "--outdir", dist, source],
                               capture_output=True, text=True, timeout=600)
        self.assertEqual(built.returncode, 0, built.stdout[-2000:] + built.stderr[-2000:])
        wheels = glob.glob(os.path.join(dist, "*.whl"))
        sdists = glob.glob(os.path.join(dist, "*.tar.gz"))
        self.assertEqual((len(wheels), len(sdists)), (1, 1), os.listdir(dist))
        checked = subprocess.run([sys.executable, "-m", "twine", "check", *wheels, *sdists],
                                 capture_output=True, text=True, timeout=120)
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)

        account = pwd.getpwnam(testAccount())
        home = os.path.join(base, "user")
        os.makedirs(home)
        shutil.copy(wheels[0], home)
        for root, dirs, files in os.walk(home):
            for name in dirs + files + [""]:
                os.chown(os.path.join(root, name), account.pw_uid, account.pw_gid)
        wheel = os.path.basename(wheels[0])
        env = {"PATH": "/usr/bin:/bin", "HOME": home}

        def asUser(command):
            return subprocess.run(command, cwd=home, env=env, user=account.pw_uid,
                                  group=account.pw_gid, extra_groups=[],
                                  capture_output=True, text=True, timeout=600)

        made = asUser(["/usr/bin/python3", "-m", "venv", "venv"])
        self.assertEqual(made.returncode, 0, made.stderr)
        installed = asUser(["venv/bin/pip", "install", "-q", "--no-cache-dir", wheel])
        self.assertEqual(installed.returncode, 0, installed.stderr[-3000:])
        helped = asUser(["venv/bin/twistd", "--help"])
        self.assertEqual(helped.returncode, 0, helped.stderr)
        self.assertIn("tmta", helped.stdout)
        self.assertNotIn("Traceback", helped.stderr)
        self.assertNotIn("Unable to write", helped.stderr)
        caches = glob.glob(os.path.join(home, "venv", "lib", "python3*", "site-packages",
                                        "twisted", "plugins", "dropin.cache"))
        self.assertEqual(len(caches), 1)
        typed = glob.glob(os.path.join(home, "venv", "lib", "python3*", "site-packages",
                                       "tmta", "py.typed"))
        self.assertEqual(len(typed), 1)
        usage = asUser(["venv/bin/tmta", "config", "-c", home, "mail_name"])
        self.assertIn("mail_name = tmta", usage.stdout + usage.stderr)
