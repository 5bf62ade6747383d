"""The generation's kept threads: reused one after another, one more for each task at once, none after a fork."""

import os
import threading

from inpaint.threads import KeptThreads


def run_on(threads: KeptThreads, task) -> threading.Thread:
    ran = []
    threads.start(lambda: (ran.append(threading.current_thread()), task())).wait()
    return ran[0]


def test_a_task_after_another_takes_its_thread_and_tasks_at_once_take_one_each():
    threads = KeptThreads("test")
    first = run_on(threads, lambda: None)
    assert run_on(threads, lambda: None) is first and first.daemon and first is not threading.current_thread()

    busy, release, ran = threading.Event(), threading.Event(), []
    held = threads.start(lambda: (ran.append(threading.current_thread()), busy.set(), release.wait()))
    busy.wait()
    assert run_on(threads, lambda: None) is not first  # not queued behind the task that holds the kept thread
    release.set()
    held.wait()
    assert ran == [first]


def test_a_forked_child_starts_its_own_threads():
    threads = KeptThreads("test")
    run_on(threads, lambda: None)  # a kept thread, which a fork leaves behind
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report whether its task ran, whatever happens
        try:
            done = threads.start(lambda: os.write(write, b"ran")).wait(timeout=30)
        finally:
            os._exit(0 if done else 1)
    os.close(write)
    _, status = os.waitpid(child, 0)
    assert os.read(read, 16) == b"ran" and os.waitstatus_to_exitcode(status) == 0
