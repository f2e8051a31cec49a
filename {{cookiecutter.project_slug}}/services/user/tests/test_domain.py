from eventkit import new_event
from user_service.domain import User


def test_replay_builds_state_and_version() -> None:
    events = [
        new_event("UserCreated", {"user_id": "u", "name": "A", "email": "a@x.io"}, source="t"),
        new_event("NameChanged", {"user_id": "u", "new_name": "B"}, source="t"),
        new_event("EmailChanged", {"user_id": "u", "new_email": "b@x.io"}, source="t"),
        new_event("UserDeactivated", {"user_id": "u"}, source="t"),
    ]
    user = User.replay("u", events)
    assert (user.name, user.email, user.status, user.version) == ("B", "b@x.io", "deactivated", 4)
    assert User.replay("u", events[:2]).name == "B"
    assert User.replay("u", events[:1]).status == "active"


def test_a_stored_version_1_user_created_still_replays() -> None:
    v1 = new_event("UserCreated", {"user_id": "u1", "name": "Ada", "email": "a@x.io"}, source="x")
    user = User.replay("u1", [v1])
    assert (user.name, user.locale, user.version) == ("Ada", "en", 1)
    assert User.create("u2", "Bo", "b@x.io", "de").pending[0].version == 2
