"""The folder lock is held once per process: a nested block (a recipe's cache build) works under it."""

import multiprocessing

from speechkd.stages import FolderLocked, folder_lock


def try_lock(folder, answer):
    try:
        with folder_lock(folder):
            answer.put("locked")
    except FolderLocked as err:
        answer.put(str(err))


def test_nested_blocks_of_the_holder_share_its_lock_and_others_are_refused(tmp_path):
    answer = multiprocessing.get_context("fork").Queue()
    with folder_lock(tmp_path):
        with folder_lock(tmp_path):  # e.g. build_cache inside a recipe that opened the folder
            other = multiprocessing.get_context("fork").Process(target=try_lock, args=(tmp_path, answer))
            other.start()
            other.join()
            assert "is in use by another speechkd run" in answer.get(timeout=10)
        other = multiprocessing.get_context("fork").Process(target=try_lock, args=(tmp_path, answer))
        other.start()
        other.join()
        assert "is in use by another speechkd run" in answer.get(timeout=10)  # the outer block still holds it
    other = multiprocessing.get_context("fork").Process(target=try_lock, args=(tmp_path, answer))
    other.start()
    other.join()
    assert answer.get(timeout=10) == "locked"  # released when the outer block ended
