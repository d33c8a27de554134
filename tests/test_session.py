import pytest

from yi_cli.session import ChatSession


def test_messages_put_system_first_and_alternate():
    s = ChatSession(system="be brief")
    s.add_user("hi")
    s.add_assistant("hello", tokens=2)
    s.add_user("bye")
    assert [m["role"] for m in s.messages()] == ["system", "user", "assistant", "user"]
    assert s.messages()[0]["content"] == "be brief"
    assert s.exchanges == 1


def test_roles_must_alternate():
    s = ChatSession()
    s.add_user("a")
    with pytest.raises(AssertionError):
        s.add_user("b")


def test_undo_and_clear_keep_system():
    s = ChatSession(system="sys")
    assert s.undo() is None
    s.add_user("q1")
    s.add_assistant("a1")
    s.add_user("q2")
    s.add_assistant("a2", finish_reason="interrupted")
    assert s.last_assistant().interrupted
    assert s.undo() == ("q2", "a2")
    assert [t.content for t in s.turns] == ["q1", "a1"]
    s.clear()
    assert s.turns == [] and s.system == "sys"


def test_round_trip_and_refusal():
    s = ChatSession(system="x")
    s.add_user("q")
    s.add_assistant("a", tokens=3, finish_reason="length", stats={"new_tokens": 3})
    again = ChatSession.from_dict(s.to_dict())
    assert again == s
    bad = s.to_dict()
    bad["turns"][0]["role"] = "assistant"
    with pytest.raises(ValueError, match="roles alternate"):
        ChatSession.from_dict(bad)
    with pytest.raises(ValueError):
        ChatSession.from_dict({"turns": [{"role": "user"}]})
