import pytest

from yi_cli.conversation.session import MAX_TURN_TOKENS, ChatSession


def test_messages_put_system_first_and_alternate():
    s = ChatSession(system="be brief")
    s.add_exchange("hi", 1, "hello", tokens=2)
    s.add_exchange("bye", 1, "see you")
    assert [m["role"] for m in s.messages()] == ["system", "user", "assistant", "user", "assistant"]
    assert s.messages()[0]["content"] == "be brief"
    assert s.exchanges == 2 and s.turns[1].tokens == 2 and s.turns[0].tokens == 1


def test_exchanges_are_replaced_and_extended_whole():
    s = ChatSession()
    s.add_exchange("q1", 1, "a1")
    s.add_exchange("q2", 1, "a2 cut", tokens=2, finish_reason="length")
    s.extend_last_reply(" and more", 2, "stop", {"new_tokens": 2})
    assert s.turns[-1].content == "a2 cut and more" and s.turns[-1].tokens == 4
    assert s.turns[-1].finish_reason == "stop"
    s.replace_last_exchange("q2 edited", 2, "b2")
    assert [t.content for t in s.turns] == ["q1", "a1", "q2 edited", "b2"]


def test_undo_and_clear_keep_system():
    s = ChatSession(system="sys")
    assert s.undo() is None
    s.add_exchange("q1", 1, "a1")
    s.add_exchange("q2", 1, "a2", finish_reason="interrupted")
    assert s.last_assistant().interrupted
    assert s.undo() == ("q2", "a2")
    assert [t.content for t in s.turns] == ["q1", "a1"]
    s.clear()
    assert s.turns == [] and s.system == "sys"


def test_undo_brings_back_the_exchanges_its_message_pushed_out_of_the_context():
    """A big message (a file attached by mistake) dropped the oldest 3 exchanges to fit; /undo of it brought back at
    most one, so the chat before it stayed out of the context, unsaid (the model no longer knew the user's name: a
    context hunt). Undone, the context is as before that message; a drop of an earlier message stays."""
    s = ChatSession()
    for k in range(4):
        s.add_exchange(f"q{k}", 1, f"a{k}")
    s.drop_oldest(2)  # q3's reply made room: q0's exchange went
    s.add_exchange("a big file", 1, "summary")
    s.drop_oldest(4)  # the big one pushed q1 and q2 out
    assert s.start == 6 and [m["content"] for m in s.messages()] == ["q3", "a3", "a big file", "summary"]
    s.undo()
    assert s.start == 2 and [m["content"] for m in s.messages()][::2] == ["q1", "q2", "q3"]
    s.undo()  # q3's own drop is undone with it
    assert s.start == 0 and [m["content"] for m in s.messages()][::2] == ["q0", "q1", "q2"]


def test_round_trip_and_refusal():
    s = ChatSession(system="x")
    s.add_exchange("q", 1, "a", tokens=3, finish_reason="length", stats={"new_tokens": 3})
    again = ChatSession.from_dict(s.to_dict())
    assert again == s
    bad = s.to_dict()
    bad["turns"][0]["role"] = "assistant"
    with pytest.raises(ValueError, match="roles alternate"):
        ChatSession.from_dict(bad)
    with pytest.raises(ValueError):
        ChatSession.from_dict({"turns": [{"role": "user"}]})
    # A file whose last turn was never answered would make the next message fail: refused when read.
    with pytest.raises(ValueError, match="without a reply"):
        ChatSession.from_dict({"turns": [{"role": "user", "content": "q"}]})


def test_exchanges_are_counted_in_words_not_with_a_parenthesised_s():
    """/clear, /load, a context drop and a resume said "1 exchange(s)"; they say it as a person would."""
    from yi_cli.conversation.session import exchanges_said

    assert [exchanges_said(n) for n in (0, 1, 2, 11)] == ["0 exchanges", "1 exchange", "2 exchanges", "11 exchanges"]


def test_a_user_turns_count_of_attached_files_goes_through_its_file_and_is_checked():
    from yi_cli.conversation.session import ChatSession

    s = ChatSession()
    s.add_exchange("notes.md:\n```\nx\n```\n\nhi", 9, "ok", 1, files=1)
    s.add_exchange("plain", 2, "ok", 1)
    data = s.to_dict()
    assert data["turns"][0]["files"] == 1 and "files" not in data["turns"][1] and "files" not in data["turns"][2]
    back = ChatSession.from_dict(data)
    assert [t.files for t in back.turns] == [1, None, None, None] and back.state() == s.state()
    for bad, i in ((-1, 0), ("1", 0), (True, 0), (2**40, 0), (1, 1)):
        turns = [dict(t) for t in data["turns"]]
        turns[i]["files"] = bad
        with pytest.raises(ValueError, match="files must be a count of attached files, in a user turn"):
            ChatSession.from_dict({**data, "turns": turns})


def test_a_reply_extended_past_the_largest_count_is_saved_as_one_its_file_reads_back():
    """A server's usage may say 2**31 - 1 completion tokens (the most a turn's count may be); a /continue added
    to it and wrote a session file that --resume then refused as malformed (and `yi-chat sessions` left out)."""
    s = ChatSession()
    s.add_exchange("q", 1, "a", tokens=MAX_TURN_TOKENS, finish_reason="length")
    s.extend_last_reply(" more", MAX_TURN_TOKENS, "length")
    back = ChatSession.from_dict(s.to_dict())
    assert back.turns[-1].tokens == MAX_TURN_TOKENS and back.turns[-1].content == "a more"
