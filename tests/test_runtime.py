"""The allocator tuning: applied once on Linux with glibc, switched off by CAPTIONER_MALLOC=default."""

import os
import subprocess
import sys

SCRIPT = "from captioner.runtime import tune_allocator as t; print(t(), t())"


def _run(**env) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


def test_tuned_where_there_is_glibc_and_the_answer_is_remembered():
    assert _run(CAPTIONER_MALLOC="") == ("True True" if _glibc() else "False False")


def test_switched_off_by_the_environment():
    assert _run(CAPTIONER_MALLOC="default") == "False False"
