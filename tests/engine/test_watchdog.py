"""PeerWatchdog on an in-memory store: which peer counts as lost, and why (the two-process run
with a killed rank is in tests/tools/test_distributed.py)."""
import json
import logging
import socket
import subprocess
import sys
import time

from torch.distributed import HashStore

from mmvitattn.engine.watchdog import PeerWatchdog


def watchdog_of_rank_0(store, peer_timeout=60.0):
    dog = PeerWatchdog(store, rank=0, world_size=2, peer_timeout=peer_timeout, logger=logging.getLogger('test'))
    dog._seen = {1: (-1, time.monotonic())}  # what start() sets, without the thread
    return dog


def register_peer(dog, store, pid, host=None):
    store.set(dog._key('who', 1), json.dumps(dict(host=host or socket.gethostname(), pid=pid)))


def test_a_live_peer_is_not_lost_and_a_dead_one_is_named_by_pid():
    store = HashStore()
    dog = watchdog_of_rank_0(store)
    peer = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        register_peer(dog, store, peer.pid)
        assert dog.lost_peer() is None
        peer.kill()
        peer.wait()
        assert dog.lost_peer() == f'rank 1 (pid {peer.pid} on {socket.gethostname()}) is gone: its process ' \
                                  'ended without a word (killed?)'
    finally:
        peer.kill()


def test_a_silent_peer_on_another_host_is_lost_after_peer_timeout():
    store = HashStore()
    dog = watchdog_of_rank_0(store, peer_timeout=0.2)
    register_peer(dog, store, pid=1, host='elsewhere')
    store.add(dog._key('beat', 1), 1)
    assert dog.lost_peer() is None  # its heartbeat moved
    time.sleep(0.3)
    lost = dog.lost_peer()
    assert lost.startswith('rank 1 (pid 1 on elsewhere) has not answered for ') and lost.endswith(' s (timeout 0.2 s)')
    assert float(lost.split('for ')[1].split(' s')[0]) >= 0.2
    assert dog.lost_peer(silent_after=60) is None  # what ends the job: the process-group timeout


def test_how_a_peer_ended_decides():
    store = HashStore()
    dog = watchdog_of_rank_0(store, peer_timeout=0.1)
    register_peer(dog, store, pid=1, host='elsewhere')
    store.set(dog._key('exit', 1), 'finished')
    time.sleep(0.2)
    assert dog.lost_peer() is None  # ended cleanly: not lost, however long ago it last beat
    store.set(dog._key('exit', 1), 'failed: SampleLoadError: training sample CocoDataset index 3 (a.jpg)')
    assert dog.lost_peer() == ('rank 1 (pid 1 on elsewhere) stopped: failed: SampleLoadError: training sample '
                               'CocoDataset index 3 (a.jpg)')
