"""Payload types from handler annotations, validation on push, size limits and round trips."""

from __future__ import annotations

import datetime
import functools
import json
import typing
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretBytes, SecretStr, field_serializer
from typing_extensions import TypedDict

from conveyor import Job, PayloadError, Registry, RegistryError, Worker
from conveyor.codec import Codec


@dataclass
class Email:
    to: str
    subject: str


class Invoice(BaseModel):
    number: int
    amount_cents: int


class Ping(TypedDict):
    """typing_extensions.TypedDict: what pydantic accepts on every supported Python."""

    host: str
    count: int


class StdPing(typing.TypedDict):
    """typing.TypedDict: what a user on Python 3.11 writes first."""

    host: str


class NotAPayload:
    """A plain class pydantic cannot build a schema for."""

    def __init__(self, anything: object) -> None:
        self.anything = anything


def make_registry(**kwargs: Any) -> Registry:
    registry = Registry(default_driver="memory", **kwargs)
    registry.queue("q", workers=["w"])
    registry.worker("w", poll_interval=0.05)
    return registry


# -- the payload type comes from the annotation -------------------------------------------


def test_dataclass_annotation_gives_the_dataclass() -> None:
    registry = make_registry()

    @registry.job("send")
    async def send(job: Job[Email]) -> None: ...

    assert registry.jobs["send"].codec.payload_type is Email


def test_pydantic_model_annotation_gives_the_model() -> None:
    registry = make_registry()

    @registry.job("render")
    def render(job: Job[Invoice]) -> None: ...

    assert registry.jobs["render"].codec.payload_type is Invoice


def test_typeddict_annotation_gives_the_typeddict() -> None:
    registry = make_registry()

    @registry.job("ping")
    async def ping(job: Job[Ping]) -> None: ...

    assert registry.jobs["ping"].codec.payload_type is Ping


def test_typing_typeddict_is_accepted_or_refused_with_a_registry_error() -> None:
    # pydantic accepts typing.TypedDict only from Python 3.12; before that conveyor must say
    # so as a RegistryError naming the job (one error root), not leak pydantic's own error.
    registry = make_registry()
    try:

        @registry.job("ping")
        async def ping(job: Job[StdPing]) -> None: ...

    except RegistryError as exc:
        assert "job 'ping'" in str(exc)
    else:
        assert registry.jobs["ping"].codec.payload_type is StdPing


def test_dict_annotation_gives_that_dict_type() -> None:
    registry = make_registry()

    @registry.job("count")
    async def count(job: Job[dict[str, int]]) -> None: ...

    assert registry.jobs["count"].codec.payload_type == dict[str, int]


def test_bare_job_annotation_gives_a_dict_of_anything() -> None:
    registry = make_registry()

    @registry.job("bare")
    async def bare(job: Job) -> None:  # type: ignore[type-arg]
        ...

    assert registry.jobs["bare"].codec.payload_type == dict[str, Any]


def test_unannotated_parameter_gives_a_dict_of_anything() -> None:
    registry = make_registry()

    @registry.job("loose")
    async def loose(job) -> None:  # type: ignore[no-untyped-def]
        ...

    assert registry.jobs["loose"].codec.payload_type == dict[str, Any]


def test_explicit_payload_overrides_the_annotation() -> None:
    registry = make_registry()

    @registry.job("send", payload=Email)
    async def send(job: Job[dict[str, Any]]) -> None: ...

    assert registry.jobs["send"].codec.payload_type is Email


def test_job_decorator_returns_a_handle_wrapping_the_handler_unchanged() -> None:
    registry = make_registry()

    async def send(job: Job[Email]) -> None:
        """Sends."""

    handle = registry.job("send")(send)
    assert handle.handler is send
    assert registry.jobs["send"].handler is send
    assert (handle.__wrapped__, handle.__name__, handle.__doc__) == (send, "send", "Sends.")  # type: ignore[attr-defined]


def test_plain_and_async_handlers_are_told_apart() -> None:
    registry = make_registry()

    @registry.job("async")
    async def a(job: Job[Email]) -> None: ...

    @registry.job("plain")
    def p(job: Job[Email]) -> None: ...

    assert registry.jobs["async"].is_async is True
    assert registry.jobs["plain"].is_async is False


# -- handlers that cannot be registered ---------------------------------------------------


def test_handler_without_a_parameter_is_refused() -> None:
    registry = make_registry()

    async def nothing() -> None: ...

    with pytest.raises(RegistryError, match="takes no argument: it must take one `job: Job"):
        registry.job("nothing")(nothing)
    assert "nothing" not in registry.jobs


@pytest.mark.parametrize("hint", [int, Email, dict[str, Any]])
def test_handler_annotated_other_than_job_is_refused(hint: Any) -> None:
    registry = make_registry()

    async def wrong(job: Any) -> None: ...

    wrong.__annotations__["job"] = hint
    with pytest.raises(RegistryError, match="annotate its first parameter as Job\\[T\\]"):
        registry.job("wrong")(wrong)


@pytest.mark.parametrize("kind", ["async", "plain"])
def test_generator_handler_is_refused_as_its_body_would_never_run(kind: str) -> None:
    registry = make_registry()

    async def async_gen(job: Job[Email]) -> AsyncIterator[None]:
        yield None

    def plain_gen(job: Job[Email]) -> Iterator[None]:
        yield None

    handler: Any = async_gen if kind == "async" else plain_gen
    with pytest.raises(RegistryError, match="generator function, whose body would never run"):
        registry.job("gen")(handler)
    assert "gen" not in registry.jobs


def test_handler_needing_more_than_its_job_is_refused_naming_the_parameters() -> None:
    registry = make_registry()

    async def send(job: Job[Email], smtp: str, *, port: int, tls: bool = True) -> None: ...

    with pytest.raises(RegistryError, match=r"needs more than its job \(smtp, port\)"):
        registry.job("send")(send)


def test_method_taken_from_its_class_is_refused_naming_the_fix() -> None:
    registry = make_registry()

    class Mailer:
        async def send(self, job: Job[Email]) -> None: ...

    with pytest.raises(RegistryError, match=r"Mailer\.send is a method taken from its class"):
        registry.job("send")(Mailer.send)


def test_something_not_callable_is_refused_as_a_registry_error() -> None:
    with pytest.raises(RegistryError, match="handler 42 is not callable"):
        make_registry().job("n")(42)  # type: ignore[arg-type]


async def test_partial_method_and_callable_object_handlers_run_with_their_payload() -> None:
    registry = make_registry()
    seen: list[tuple[str, Email]] = []

    async def with_tag(job: Job[Email], tag: str) -> None:
        seen.append((tag, job.payload))

    class Mailer:
        async def send(self, job: Job[Email]) -> None:
            seen.append(("method", job.payload))

        async def __call__(self, job: Job[Email]) -> None:
            seen.append(("object", job.payload))

    registry.job("partial")(functools.partial(with_tag, tag="partial"))
    registry.job("method")(Mailer().send)
    registry.job("object")(Mailer())
    for name in ("partial", "method", "object"):
        assert registry.jobs[name].codec.payload_type is Email
        await registry.push("q", name, Email(name, "hi"))
    await Worker(registry, "w", burst=True).run()
    assert sorted(seen) == [(n, Email(n, "hi")) for n in ("method", "object", "partial")]
    await registry.close()


def test_handler_whose_annotation_cannot_be_resolved_is_refused() -> None:
    registry = make_registry()

    async def broken(job: Job[Missing]) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(RegistryError, match="cannot read the annotations"):
        registry.job("broken")(broken)


async def test_payload_type_defined_in_a_function_is_refused_saying_how_to_give_it() -> None:
    # This module's annotations are names (from __future__ import annotations): one naming a
    # class defined inside a function cannot be looked up once the function returned.
    registry = make_registry()

    @dataclass
    class Local:
        n: int

    async def local(job: Job[Local]) -> None:
        ran.append(job.payload)

    ran: list[Local] = []
    with pytest.raises(RegistryError, match="name 'Local' is not defined") as caught:
        registry.job("local")(local)
    assert "payload=Local" in str(caught.value) and "module level" in str(caught.value)
    handle = registry.job("local", queue="q", payload=Local)(local)  # as the message says
    await handle.push(Local(3))
    await Worker(registry, "w", burst=True).run()
    assert ran == [Local(3)]
    await registry.close()


def test_payload_type_pydantic_cannot_handle_is_refused_naming_the_job() -> None:
    registry = make_registry()

    with pytest.raises(RegistryError) as caught:

        @registry.job("odd")
        async def odd(job: Job[NotAPayload]) -> None: ...

    assert "job 'odd'" in str(caught.value)
    assert "NotAPayload" in str(caught.value)
    assert "arbitrary_types_allowed" not in str(caught.value)  # that would make it no JSON


# -- validation on push -------------------------------------------------------------------


async def test_push_accepts_a_dict_for_a_dataclass_and_the_handler_gets_the_dataclass() -> None:
    registry = make_registry()
    received: list[Any] = []

    @registry.job("send")
    async def send(job: Job[Email]) -> None:
        received.append(job.payload)

    job_id = await registry.push("q", "send", {"to": "a@example.com", "subject": "Hi"})
    stored = await registry.job_info(job_id)
    assert stored is not None
    assert json.loads(stored.payload) == {"to": "a@example.com", "subject": "Hi"}

    await Worker(registry, "w", burst=True).run()
    assert received == [Email("a@example.com", "Hi")]
    assert type(received[0]) is Email


async def test_handler_gets_a_pydantic_model_instance() -> None:
    registry = make_registry()
    received: list[Any] = []

    @registry.job("render")
    def render(job: Job[Invoice]) -> None:
        received.append(job.payload)

    await registry.push("q", "render", Invoice(number=7, amount_cents=1999))
    await Worker(registry, "w", burst=True).run()
    assert received == [Invoice(number=7, amount_cents=1999)]


async def test_push_with_a_missing_field_names_the_job_and_the_field() -> None:
    registry = make_registry()
    registry.job("send")(_send_email)
    with pytest.raises(PayloadError) as caught:
        await registry.push("q", "send", {"to": "a@example.com"})
    message = str(caught.value)
    assert "job 'send'" in message
    assert "subject" in message
    assert "Email" in message
    assert (await registry.queue_info())["q"].pending == 0


async def test_push_with_a_wrong_field_type_is_refused() -> None:
    registry = make_registry()

    @registry.job("render")
    def render(job: Job[Invoice]) -> None: ...

    with pytest.raises(PayloadError, match="number"):
        await registry.push("q", "render", {"number": "seven", "amount_cents": 1})


async def test_push_of_the_wrong_type_entirely_is_refused() -> None:
    registry = make_registry()
    registry.job("send")(_send_email)
    with pytest.raises(PayloadError, match="job 'send'"):
        await registry.push("q", "send", ["a@example.com", "Hi"])


async def test_push_of_a_non_json_value_in_a_dict_payload_is_refused() -> None:
    registry = make_registry()

    @registry.job("any")
    async def anything(job: Job[dict[str, Any]]) -> None: ...

    with pytest.raises(PayloadError) as caught:
        await registry.push("q", "any", {"thing": object()})
    assert "job 'any'" in str(caught.value)
    assert "not JSON" in str(caught.value)
    assert (await registry.queue_info())["q"].pending == 0


async def test_push_many_with_one_bad_payload_stores_none() -> None:
    registry = make_registry()
    registry.job("send")(_send_email)
    good = {"to": "a@example.com", "subject": "Hi"}
    with pytest.raises(PayloadError):
        await registry.push_many("q", "send", [good, {"to": "b@example.com"}, good])
    assert (await registry.queue_info())["q"].pending == 0


async def test_oversized_payload_is_refused_with_its_size_and_the_limit() -> None:
    registry = make_registry(max_payload_bytes=100)

    @registry.job("blob")
    async def blob(job: Job[dict[str, str]]) -> None: ...

    payload = {"data": "x" * 200}
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    with pytest.raises(PayloadError) as caught:
        await registry.push("q", "blob", payload)
    message = str(caught.value)
    assert f"is {size} bytes" in message
    assert "limit of 100" in message
    assert "job 'blob'" in message


async def test_payload_exactly_at_the_limit_is_accepted() -> None:
    registry = make_registry(max_payload_bytes=100)

    @registry.job("blob")
    async def blob(job: Job[dict[str, str]]) -> None: ...

    overhead = len(json.dumps({"data": ""}, separators=(",", ":")))
    await registry.push("q", "blob", {"data": "x" * (100 - overhead)})
    with pytest.raises(PayloadError):
        await registry.push("q", "blob", {"data": "x" * (101 - overhead)})


def test_payload_limit_counts_bytes_not_characters() -> None:
    codec = Codec("blob", dict[str, str], max_bytes=20)
    # 8 characters of 3 bytes each, plus 11 bytes of JSON around them: 35 bytes, 19 characters.
    with pytest.raises(PayloadError, match="bytes, over the limit of 20"):
        codec.encode({"d": "\u20ac" * 8})


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload_type", "value"),
    [
        (Email, Email("a@example.com", "Hi \u00e9\u20ac")),
        (Invoice, Invoice(number=7, amount_cents=-5)),
        (Ping, Ping(host="example.com", count=3)),
        (dict[str, Any], {"nested": {"list": [1, 2.5, None, True, "s"]}}),
    ],
    ids=["dataclass", "pydantic", "typeddict", "dict"],
)
def test_encode_then_decode_gives_an_equal_object(payload_type: Any, value: Any) -> None:
    codec = Codec("job", payload_type)
    text = codec.encode(value)
    assert isinstance(text, str)
    json.loads(text)
    decoded = codec.decode(text)
    assert decoded == value
    assert type(decoded) is type(value)


def test_decode_of_stored_text_that_no_longer_matches_raises_payload_error() -> None:
    codec = Codec("send", Email)
    with pytest.raises(PayloadError, match="job 'send'"):
        codec.decode('{"to": "a@example.com"}')


async def _send_email(job: Job[Email]) -> None:
    """A module-level handler shared by the validation tests."""


class Aliased(BaseModel):
    """A model whose fields go out under other names, with a default and a date."""

    model_config = {"populate_by_name": True, "serialize_by_alias": True}

    user_id: int = Field(alias="userId")
    tags: list[str] = []
    at: datetime.datetime = datetime.datetime(2026, 12, 4, tzinfo=datetime.UTC)


class Point(TypedDict):
    x: float
    label: str


@dataclass
class Nested:
    point: Point
    note: str | None = None


@pytest.mark.parametrize(
    ("kind", "payloads"),
    [
        (Aliased, [Aliased(user_id=1), {"userId": 2, "tags": ["é", "\n"]}, Aliased(userId=3)]),
        (Point, [{"x": 1.5, "label": "a"}, Point(x=-0.0, label='"q"')]),
        (Nested, [Nested({"x": 1e300, "label": ""}), {"point": {"x": 2, "label": "b"}}]),
        (dict[str, Any], [{}, {"a": [1, {"b": None}], "ü": "\u2028"}]),
    ],
)
def test_encode_many_writes_each_payload_as_encode_does(kind: Any, payloads: list[Any]) -> None:
    codec = Codec("job", kind)

    assert codec.encode_many(payloads) == [codec.encode(payload) for payload in payloads]


@dataclass
class Attachment:
    name: str
    data: bytes


@dataclass
class Letter:
    to: str
    attachments: list[Attachment]


def test_bytes_that_are_not_utf8_are_refused_naming_the_field_and_the_fix() -> None:
    codec = Codec("mail", Letter)
    letter = Letter("ada", [Attachment("a.txt", b"text"), Attachment("b.png", b"\x89PNG\xff")])
    with pytest.raises(PayloadError, match=r"attachments\.1\.data holds bytes that are not UTF-8"):
        codec.encode(letter)
    with pytest.raises(PayloadError, match="ser_json_bytes='base64'"):
        codec.encode_many([letter])
    text = Letter("ada", [Attachment("a.txt", "é🚀\x00".encode())])
    assert codec.decode(codec.encode(text)) == text


def test_bytes_of_a_dataclass_configured_for_base64_travel_whole() -> None:
    @dataclass
    class Blob:
        __pydantic_config__ = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
        data: bytes

    codec = Codec("blob", Blob)
    assert codec.decode(codec.encode(Blob(bytes(range(256))))) == Blob(bytes(range(256)))


@pytest.mark.parametrize("bad", [0, -1, "1MB", 1.5, True, None])
def test_max_payload_bytes_that_is_no_size_is_refused_by_the_registry(bad: Any) -> None:
    with pytest.raises(RegistryError, match="max_payload_bytes must be a whole number of bytes"):
        Registry(default_driver="memory", max_payload_bytes=bad)


def test_instance_holding_a_value_of_another_type_is_refused_plainly_without_a_warning() -> None:
    codec = Codec("send", Email)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydantic's serializer warning must not reach the user
        with pytest.raises(PayloadError) as caught:
            codec.encode(Email(7, "hi"))  # type: ignore[arg-type]
        with pytest.raises(PayloadError, match="to: Input should be a valid string"):
            codec.encode_many([Email("ada", "hi"), Email(7, "hi")])  # type: ignore[arg-type]
    message = str(caught.value)
    assert "to: Input should be a valid string" in message
    assert "an instance's fields are not checked when it is made" in message
    assert "NaN" not in message


def test_text_holding_a_lone_surrogate_is_refused_naming_the_field() -> None:
    codec = Codec("letter", Letter)
    broken = Letter("ada", [Attachment(b"caf\xe9".decode(errors="surrogateescape"), b"")])
    with pytest.raises(PayloadError, match=r"attachments\.0\.name holds a lone surrogate"):
        codec.encode(broken)


class Aliased(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    to_addr: str = Field(alias="toAddr")


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    to: str


@pytest.mark.parametrize(
    ("payload_type", "payload"),
    [(Email, {"to": "a", "subject": "s", "subjet": "s"}),
     (Invoice, {"number": 1, "amount_cents": 2, "amount": 3}),
     (Ping, {"host": "h", "count": 1, "cnt": 2}), (Aliased, {"toAddr": "a", "cc": "b"})],
)  # fmt: skip
def test_dict_with_a_key_of_no_field_is_refused_naming_the_key(
    payload_type: Any, payload: dict[str, Any]
) -> None:
    codec = Codec("j", payload_type)
    extra = next(reversed(payload))
    with pytest.raises(PayloadError, match=f"keys that are no field of .*: {extra!r}"):
        codec.encode(payload)
    with pytest.raises(PayloadError, match="a misspelt key would be dropped"):
        codec.encode_many([{k: v for k, v in payload.items() if k != extra}, payload])


def test_keys_by_alias_or_name_and_types_that_keep_unknown_keys_are_accepted() -> None:
    assert Codec("j", Aliased).encode({"toAddr": "a"}) == Codec("j", Aliased).encode(
        {"to_addr": "a"}
    )
    assert Codec("j", Open).decode(Codec("j", Open).encode({"to": "a", "cc": "b"})).cc == "b"  # type: ignore[attr-defined]
    assert Codec("j", dict[str, Any]).encode({"any": 1}) == '{"any":1}'


def test_a_stored_payload_with_a_key_of_no_field_still_decodes() -> None:
    # a job pushed by code that had the field, run by code that dropped it: it still runs
    assert Codec("j", Email).decode('{"to": "a", "subject": "s", "gone": 1}') == Email("a", "s")


@dataclass
class Tree:
    """A type holding itself: a dict for it is walked as deep as it goes."""

    kids: list[Tree]


def nested(depth: int, leaf: Any) -> Any:
    """`leaf` inside `depth` lists."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def tree(depth: int) -> dict[str, Any]:
    """A dict for Tree, `depth` levels deep."""
    value: dict[str, Any] = {"kids": []}
    for _ in range(depth):
        value = {"kids": [value]}
    return value


@pytest.mark.parametrize(
    ("payload_type", "payload"),
    [
        (dict[str, Any], {"a": nested(254, 1)}),  # written, but past what JSON is read back to
        (dict[str, Any], {"a": nested(300, 1)}),  # past what pydantic writes
        (dict[str, Any], {"a": nested(5000, 1)}),  # past Python's own recursion limit
        (Tree, tree(5000)),
    ],
    ids=["read-back", "written", "python", "walked"],
)
def test_payload_nested_too_deep_is_refused_plainly(payload_type: Any, payload: Any) -> None:
    codec = Codec("j", payload_type)
    with pytest.raises(PayloadError, match=r"^payload of job 'j' is nested too deep") as caught:
        codec.encode(payload)
    assert "flatten it" in str(caught.value)
    with pytest.raises(PayloadError, match=r"^payloads\[1\]: payload of job 'j' is nested too"):
        codec.encode_many([{"kids": []}, payload])


class Login(BaseModel):
    user: str
    password: SecretStr


class RevealedLogin(BaseModel):
    user: str
    password: SecretStr

    @field_serializer("password", when_used="json")
    def reveal(self, password: SecretStr) -> str:
        return password.get_secret_value()


@dataclass
class Upload:
    key: SecretBytes
    login: Login | None = None


@pytest.mark.parametrize(
    ("payload_type", "payload"),
    [
        (Login, Login(user="ada", password=SecretStr("hunter2"))),
        (Login, {"user": "ada", "password": "hunter2"}),
        (Upload, Upload(SecretBytes(b"k"))),
        (Upload, {"key": b"", "login": {"user": "ada", "password": "hunter2"}}),
    ],
)
def test_a_secret_pydantic_would_write_masked_is_refused_at_push(
    payload_type: Any, payload: Any
) -> None:
    codec = Codec("j", payload_type)
    with pytest.raises(PayloadError, match=r"writes to JSON masked \('\*{10}'\)") as caught:
        codec.encode(payload)
    assert "job 'j'" in str(caught.value) and "field_serializer" in str(caught.value)
    with pytest.raises(PayloadError, match=r"^payloads\[1\]: .* writes to JSON masked"):
        codec.encode_many([payload_type(user="bob", password="") if payload_type is Login
                           else Upload(SecretBytes(b"")), payload])  # fmt: skip


def test_a_secret_written_whole_by_a_field_serializer_reaches_the_handler() -> None:
    codec = Codec("j", RevealedLogin)
    pushed = RevealedLogin(user="ada", password=SecretStr("hunter2"))
    assert codec.decode(codec.encode(pushed)).password.get_secret_value() == "hunter2"
    assert codec.decode(codec.encode_many([pushed])[0]) == pushed


@dataclass
class Cat:
    name: str


@dataclass
class Dog:
    name: str


@dataclass
class Tagged:
    kind: Literal["tagged"]
    name: str


@dataclass
class Pets:
    first: Cat | Dog
    others: list[Cat | Dog] = field(default_factory=list)


@pytest.mark.parametrize(
    "payload",
    [Pets(Dog("rex")), Pets(Cat("tom"), [Cat("a"), Dog("rex")]), {"first": Dog("rex")}],
)
def test_a_union_member_read_back_as_another_alike_is_refused(payload: Any) -> None:
    codec = Codec("j", Pets)
    with pytest.raises(PayloadError, match="the first that fits") as caught:
        codec.encode(payload)
    assert "job 'j'" in str(caught.value) and "Literal" in str(caught.value)
    with pytest.raises(PayloadError, match=r"^payloads\[1\]: .*the first that fits"):
        codec.encode_many([Pets(Cat("tom")), payload])


def test_union_members_read_back_as_pushed_are_accepted() -> None:
    codec = Codec("j", Pets)
    pushed = Pets(Cat("tom"), [Cat("a")])
    assert codec.decode(codec.encode(pushed)) == pushed
    assert codec.encode_many([pushed, pushed]) == [codec.encode(pushed)] * 2
    tagged = Codec("j", Cat | Tagged)
    assert type(tagged.decode(tagged.encode(Tagged("tagged", "x")))) is Tagged


@dataclass(eq=False)
class Ident:
    """Equal only to itself: what is read back is never equal to it."""

    name: str


@dataclass
class Vet:
    pet: Cat | Dog
    notes: dict[str, Any]  # any JSON: a tuple in it is read back as a list


def test_a_union_read_back_as_pushed_is_accepted_whatever_else_is_read_back_other() -> None:
    codec = Codec("j", Vet)
    assert codec.decode(codec.encode(Vet(Cat("tom"), {"at": (1, 2)}))).notes == {"at": [1, 2]}
    ident = Codec("j", Ident | Dog)
    assert ident.decode(ident.encode(Ident("x"))).name == "x"
    assert len(ident.encode_many([Ident("x"), {"name": "y"}])) == 2
    with pytest.raises(PayloadError, match=r"^payloads\[1\]: .*the first that fits"):
        ident.encode_many([Ident("x"), Dog("y")])
