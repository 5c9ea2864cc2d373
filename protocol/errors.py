# Typed protocol errors. Each class carries a short stable `code` that
# components use as a metric label and that acks and golden vectors carry, and
# a human detail that names exactly what is wrong.


class ProtocolError(ValueError):
    code = "protocol"

    def __init__(self, detail=""):
        super().__init__(detail)
        self.detail = detail

    def __str__(self):
        return self.code + ": " + self.detail


class TopicError(ProtocolError):
    """A topic in our namespace with a bad segment."""
    code = "bad_topic"


class UnknownTopic(ProtocolError):
    """A topic outside the pe/v1 namespace or with an unknown kind/channel."""
    code = "unknown_topic"


class MalformedPayload(ProtocolError):
    """Not UTF-8, not JSON, or not a JSON object."""
    code = "malformed"


class OversizedPayload(ProtocolError):
    code = "oversized"


class UnsupportedVersion(ProtocolError):
    code = "bad_version"


class MissingField(ProtocolError):
    code = "missing_field"


class BadField(ProtocolError):
    code = "bad_field"


class BadSignature(ProtocolError):
    code = "bad_signature"


class UnknownKey(ProtocolError):
    code = "unknown_key"


class ExpiredCommand(ProtocolError):
    code = "expired"


class NotYetValid(ProtocolError):
    code = "not_yet_valid"


class ReplayedCommand(ProtocolError):
    code = "replayed"


class WrongDevice(ProtocolError):
    code = "wrong_device"


class InvalidBarcode(ProtocolError):
    """Raised by require_* helpers; `reason` is the validator's reason code."""
    code = "bad_barcode"

    def __init__(self, reason, detail=""):
        super().__init__(detail or reason)
        self.reason = reason


class RetiredKey(ProtocolError):
    """Signed with the previous key version after its grace period ended."""
    code = "retired_key"


class NotAPermit(ProtocolError):
    """A command a handheld may not carry: not a permit op, or a permit not
    bound to the handheld, parcel, courier and short lifetime it must name."""
    code = "not_a_permit"


class BadSeal(ProtocolError):
    """A sealed code that does not open: wrong key, changed box, event or parcel."""
    code = "bad_seal"


class Revoked(ProtocolError):
    """A permit naming a revoked handheld or courier (protocol/revocation.py),
    or issued before a revocation the locker had to let go of."""
    code = "revoked"
