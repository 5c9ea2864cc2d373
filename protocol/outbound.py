# Outbound (寄件) identifiers the locker, the handheld, the gateway and the
# platform share. Kept small: the locker imports it.
#
# - a send order id, issued by the platform when a villager books a send
#   (e.g. SO20261203-0042): 4-32 of A-Z 0-9 -, starting with a letter and
#   holding at least one "-", which no parcel id (S10, domestic waybill,
#   SSCC) has: an item on a bag's list is one or the other, never both. A
#   group order (集订分送) uses the same form (e.g. GO20261203-7).
# - a bag label (总包签): BG + 11 digits + a GS1 mod-10 check digit, 14
#   characters, printed as Code 128 on the bag's label; a misread digit or a
#   hand-typed slip fails the check digit.

BAG_PREFIX = "BG"
BAG_LEN = 14


def valid_order(s):
    if not isinstance(s, str) or not 4 <= len(s) <= 32 or not "A" <= s[0] <= "Z" or "-" not in s:
        return False
    for c in s:
        if not ("A" <= c <= "Z" or "0" <= c <= "9" or c == "-"):
            return False
    return True


def bag_check_digit(digits11):
    """GS1 mod-10 (weights 3,1 from the right) over the 11 serial digits."""
    total = 0
    for i, c in enumerate(reversed(digits11)):
        total += int(c) * (3 if i % 2 == 0 else 1)
    return str((10 - total % 10) % 10)


def make_bag(serial):
    """The bag id for serial number `serial` (0 .. 10^11 - 1)."""
    d = "%011d" % serial
    return BAG_PREFIX + d + bag_check_digit(d)


def bag_problem(s):
    """None for a valid bag id, else why not (a short reason code)."""
    if not isinstance(s, str) or len(s) != BAG_LEN or not s.startswith(BAG_PREFIX):
        return "bag_format"
    d = s[2:]
    for c in d:
        if not "0" <= c <= "9":
            return "bag_format"
    if bag_check_digit(d[:11]) != d[11]:
        return "bag_check_digit"
    return None


def valid_bag(s):
    return bag_problem(s) is None
