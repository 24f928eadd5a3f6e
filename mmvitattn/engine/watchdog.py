"""A rank that dies is named by the others, which then exit instead of waiting in a collective.

Every rank runs a thread that bumps its heartbeat counter in the job's key-value store (the
process group's TCPStore; torchrun hosts it in its agent) and watches the others'. A peer counts
as lost when its process is gone (peers on the same host are checked by pid), when it recorded
that it failed, or when its heartbeat has stopped. A rank that stops cleanly (finished,
preempted) records that first and is not reported.

While this rank's main thread is still waiting (e.g. inside an NCCL all-reduce), the thread ends
the process with :data:`PEER_LOST_EXIT_CODE`, naming the rank, when a peer is gone or failed, or
silent for longer than ``hang_timeout`` (the process-group timeout: a busy machine can delay a
heartbeat, and a healthy job must not be ended for that). When the main thread fails first (gloo
reports a closed connection at once), :meth:`PeerWatchdog.name_lost_peers` names a peer silent
for ``peer_timeout`` seconds (waiting up to that long) before the error exits the process.
"""
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Dict, Optional

PEER_LOST_EXIT_CODE = 76


def _process_gone(pid: int) -> bool:
    """True if no such process exists or it is a zombie (ended, not yet reaped by its launcher)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X')
    except (OSError, IndexError):
        return False


class PeerWatchdog:

    def __init__(self, store, rank: int, world_size: int, peer_timeout: float, logger: logging.Logger,
                 hang_timeout: float = 1800.0):
        self.store, self.rank, self.world_size = store, rank, world_size
        self.peer_timeout = float(peer_timeout)
        self.hang_timeout = max(float(hang_timeout), self.peer_timeout)
        self.interval = min(1.0, self.peer_timeout / 5)
        self.logger = logger
        self.prefix = 'mmvitattn/{}/{}/'.format(os.environ.get('TORCHELASTIC_RUN_ID', 'run'),
                                                os.environ.get('TORCHELASTIC_RESTART_COUNT', '0'))
        self.host = socket.gethostname()
        self._stop = threading.Event()
        self._main_failed = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._seen: Dict[int, tuple] = {}  # rank -> (heartbeat count, time it last moved)
        self._who: Dict[int, dict] = {}

    def _key(self, kind: str, rank: int) -> str:
        return f'{self.prefix}{kind}/{rank}'

    def start(self) -> None:
        self.store.set(self._key('who', self.rank), json.dumps(dict(host=self.host, pid=os.getpid())))
        now = time.monotonic()
        self._seen = {r: (-1, now) for r in range(self.world_size) if r != self.rank}
        self._thread = threading.Thread(target=self._run, name='mmvitattn-peer-watchdog', daemon=True)
        self._thread.start()

    def stop(self, outcome: str) -> None:
        """Record how this rank ends ('finished', 'preempted', 'failed: ...') and stop watching."""
        self._stop.set()
        try:
            self.store.set(self._key('exit', self.rank), outcome)
        except Exception:  # the store may be gone with the job; nothing left to tell
            pass

    def _run(self) -> None:
        store_lost_since = None
        while not self._stop.wait(self.interval):
            try:
                self.store.add(self._key('beat', self.rank), 1)
                lost = self.lost_peer(silent_after=self.hang_timeout)
                store_lost_since = None
            except Exception as err:  # the store's host (rank 0 or the launcher) is gone
                store_lost_since = store_lost_since or time.monotonic()
                if time.monotonic() - store_lost_since < self.hang_timeout:
                    continue
                lost = f'the job\'s key-value store ({os.environ.get("MASTER_ADDR")}:' \
                       f'{os.environ.get("MASTER_PORT")}, hosted by rank 0 or torchrun) is unreachable: {err}'
            if lost and not self._stop.is_set() and not self._main_failed.is_set():
                self._exit(lost)

    def _exit(self, lost: str) -> None:
        self.stop(f'exited: {lost}')  # the others should name the rank that was lost, not this one
        self.logger.error(f'rank {self.rank}: {lost}; exiting with code {PEER_LOST_EXIT_CODE}')
        for handler in self.logger.handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(PEER_LOST_EXIT_CODE)

    def lost_peer(self, silent_after: Optional[float] = None) -> Optional[str]:
        """A description of the first lost peer, or None while all are alive or ended cleanly;
        a peer counts as lost once silent for ``silent_after`` seconds (default ``peer_timeout``)."""
        silent_after = self.peer_timeout if silent_after is None else silent_after
        now = time.monotonic()
        for rank, (count, moved) in self._seen.items():
            exit_key = self._key('exit', rank)
            if self.store.check([exit_key]):
                outcome = self.store.get(exit_key).decode(errors='replace')
                if outcome.startswith('failed'):
                    return f'rank {rank}{self._where(rank)} stopped: {outcome}'
                continue
            beat = self.store.add(self._key('beat', rank), 0)
            if beat != count:
                self._seen[rank] = (beat, now)
            where = self._where(rank)
            info = self._who.get(rank)
            if info and info['host'] == self.host and _process_gone(info['pid']):
                return f'rank {rank}{where} is gone: its process ended without a word (killed?)'
            if now - self._seen[rank][1] > silent_after:
                return f'rank {rank}{where} has not answered for {now - self._seen[rank][1]:.1f} s ' \
                       f'(timeout {silent_after:g} s)'
        return None

    def _where(self, rank: int) -> str:
        if rank not in self._who and self.store.check([self._key('who', rank)]):
            self._who[rank] = json.loads(self.store.get(self._key('who', rank)))
        info = self._who.get(rank)
        return f' (pid {info["pid"]} on {info["host"]})' if info else ''

    def name_lost_peers(self, error: BaseException) -> None:
        """This rank's main thread failed: record it, and log a lost peer if one shows up within
        ``peer_timeout`` (a failure in a collective is usually a peer that died)."""
        self._main_failed.set()
        self.stop(f'failed: {type(error).__name__}: {str(error).strip()[:300]}')
        deadline = time.monotonic() + self.peer_timeout
        while time.monotonic() < deadline:
            try:
                lost = self.lost_peer()
            except Exception:
                return
            if lost:
                self.logger.error(f'rank {self.rank}: {lost}')
                return
            if all(self.store.check([self._key('exit', r)]) for r in self._seen):
                return  # every peer ended on its own
            time.sleep(self.interval)
