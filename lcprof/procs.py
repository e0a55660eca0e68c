"""Process hygiene for launched workers (no torch): a torchrun rank never outlives its launcher.

torchrun's agent hosts the store the ranks rendezvous on. If the agent is killed (a test's timeout,
a user's kill -9), its ranks would wait for that store until their process-group timeout. A rank
that calls :func:`die_with_parent` early is sent SIGTERM by the kernel the moment the agent dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys


def under_torchrun() -> bool:
    """True in a worker started by torchrun (torch.distributed.run sets TORCHELASTIC_RUN_ID)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def die_with_parent() -> bool:
    """Linux: ask the kernel to send this process SIGTERM when its parent dies (PR_SET_PDEATHSIG).

    Returns True when the request is in place. If the parent already died before the call (this
    process was re-parented), the process ends now. No-op (False) elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return False
    if os.getppid() != parent:  # the parent died between the two calls
        os.kill(os.getpid(), signal.SIGTERM)
    return True
