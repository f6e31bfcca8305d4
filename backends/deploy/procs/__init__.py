"""The one place that spawns processes, and the one that finds and stops them again.

One module per concern: :mod:`~.spawn` (the spawner thread, :class:`SpawnedProcess`),
:mod:`~.identity` (``/proc`` identity, pidfd signals, marker scans), :mod:`~.pidfiles` (pid
files, orphan cleanup), :mod:`~.ports` (free ports), :mod:`~.logtail` (log tails).

Everything an engine process needs to be started *and to never outlive us* is here:

* **Own process group.** Engines are started with ``start_new_session=True``: the engine and
  every child it forks (vLLM's workers, a tokenizer pool) share a process group, so teardown
  signals the whole group at once, and a Ctrl-C in the tool's terminal does not reach the
  engine behind our back (we tear it down ourselves, in order).
* **Parent-death signal.** On Linux the child asks the kernel, before ``exec``, to send it
  ``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so even ``kill -9`` of the
  tool leaves no engine running. The kernel sends it when the parent *thread* that forked the
  child exits, not the process. An engine deployed from a short-lived worker thread would be
  killed when that thread ends, so every spawn is handed to one long-lived daemon thread
  (:class:`_Spawner`) that lives exactly as long as the process.
* **Pid files and a marker.** Each engine gets a random marker in its environment
  (``AUTOTUNER_DEPLOYMENT_ID``), inherited by all of its children, and a pid file (written
  atomically *before* the spawn, completed after) holding the marker, pid, process group,
  start time, boot id and the owner's identity. After a crash of the owner,
  :func:`cleanup_orphans` finds what is left by marker (also grandchildren that the parent-death
  signal cannot reach, since it covers the direct child only), and never kills a process that
  merely reuses a recorded pid: a pid counts as ours only if its start time and boot id match,
  or its environment carries our marker; signals go through a pidfd where the kernel has them,
  so the check and the kill cannot race.
* **No early reaping.** The engine's exit is observed with ``waitid(WNOWAIT)``, which leaves it
  a zombie until teardown ends. A zombie leader keeps its pid, and so its process-group id,
  from being reused, which makes ``killpg`` of that group safe at every step of the teardown.
* **Secrets.** Environment values are passed to the child only. Pid files hold the argv (which
  is recorded in results anyway) and labels, never the environment.

Linux is the target (systemd hosts, containers). Elsewhere the parent-death signal, ``/proc``
identity checks and marker scans are skipped, and teardown falls back to signalling the group
while its leader lives.
"""

from backends.deploy.procs.identity import MARKER_ENV, ProcessIdentity, is_running, read_identity
from backends.deploy.procs.logtail import read_tail
from backends.deploy.procs.pidfiles import (
    PidRecord,
    cleanup_orphans,
    pid_file_path,
    read_pid_file,
    read_pid_files,
)
from backends.deploy.procs.ports import free_port
from backends.deploy.procs.spawn import SpawnedProcess, spawn

__all__ = [
    "MARKER_ENV",
    "PidRecord",
    "ProcessIdentity",
    "SpawnedProcess",
    "cleanup_orphans",
    "free_port",
    "is_running",
    "pid_file_path",
    "read_identity",
    "read_pid_file",
    "read_pid_files",
    "read_tail",
    "spawn",
]
