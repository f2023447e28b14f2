"""Files several writers share: the exported config, the report."""

from __future__ import annotations

import threading
from pathlib import Path

from autotune.files import write_text_atomic


def test_concurrent_writers_of_one_path_all_succeed_and_leave_a_whole_file(
        tmp_path: Path) -> None:
    """Workers of one shared study export the same config at once: every write succeeds,
    the file holds one writer's whole text, no temporary file is left behind. (With one
    shared temporary name, a writer whose file another had renamed away failed.)"""
    path = tmp_path / "tuned.json"
    texts = [f"{i}\n" * 20_000 for i in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(texts))

    def write(text: str) -> None:
        start.wait()
        try:
            for _ in range(20):
                write_text_atomic(path, text)
        except BaseException as e:  # collected for the assertion below
            errors.append(e)
    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert path.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["tuned.json"]
