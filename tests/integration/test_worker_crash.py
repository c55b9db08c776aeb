"""A worker killed with SIGKILL: the supervisor respawns it into its slot,
the other worker's clients never notice, the dead worker's clients can log
in again."""

import os
import signal

from xmpptest import Conversation, error_condition, eventually, login_on_worker, within


async def test_kill_worker_respawns_and_others_keep_talking(node):
    users = {}
    for name in ("alice", "bob", "carol"):
        users[name] = await node.aadd_user(name)
    # alice and bob on worker 0 talk to each other; carol is on worker 1,
    # the one we kill.
    alice = await login_on_worker(node, users["alice"][0], users["alice"][1], want=0)
    bob = await login_on_worker(node, users["bob"][0], users["bob"][1], want=0)
    carol = await login_on_worker(node, users["carol"][0], users["carol"][1], want=1)

    before = await node.astatus()
    victim = before.worker_pid(1)
    survivor = before.worker_pid(0)
    node.expect_crash(1, victim, signal.SIGKILL)

    async with Conversation(alice, bob) as talk:
        mark = node.log_size()
        os.kill(victim, signal.SIGKILL)
        await within(carol.disconnected.wait(), "carol's connection dropping with its worker")
        await node.await_log(r"worker 1 \(pid %d\) killed by signal 9; respawning" % victim,
                             since=mark)
        started = await node.await_log(r"worker 1 started \(pid (\d+)\)", since=mark)
        new_pid = int(started.group(1))
        assert new_pid != victim
        await talk.advance(5)

        async def respawned():
            status = await node.astatus()
            if status.workers.get(1, {}).get("state") == "running":
                return status
        after = await eventually(respawned, "worker 1 running again in xmppctl status")
        assert after.worker_pid(1) == new_pid, after.text
        assert after.worker_pid(0) == survivor, "worker 0 was restarted too:\n" + after.text

        # The dead worker's sessions left the directory with it.
        listed = {s.jid for s in await node.asessions()}
        assert carol.jid not in listed, listed
        assert {alice.jid, bob.jid} <= listed, listed

        # carol logs in again, on the respawned worker.
        carol2 = await login_on_worker(node, users["carol"][0], users["carol"][1], want=1,
                                       resource="again")
        await talk.advance(2)
    # The respawned worker routes across workers both ways.
    await _exchange(carol2, bob)
    await _exchange(alice, carol2)
    # carol's old session is no routing target any more (with carol2 gone
    # too, carol is offline: RFC 6121 8.5.3.2.1 leaves no other choice).
    await carol2.logout()
    mid = bob.send_message(carol.jid, "to the dead session")
    err = await bob.next_message()
    assert err["id"] == mid and error_condition(err) == "service-unavailable", err
    for c in (alice, bob):
        await c.logout()


async def _exchange(a, b):
    a.send_message(b.jid, "ping from %s" % a.jid)
    msg = await b.next_message()
    assert msg["body"] == "ping from %s" % a.jid and str(msg["from"]) == a.jid, msg
    b.send_message(a.jid, "pong from %s" % b.jid)
    msg = await a.next_message()
    assert msg["body"] == "pong from %s" % b.jid and str(msg["from"]) == b.jid, msg
