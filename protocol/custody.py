# Compartment states as a locker reports them in locker.state and as the
# gateway's page and the platform read them: part of the wire contract.
#
#   free            empty and available
#   reserved        held for a parcel announced by the handheld (until exp)
#   occupied        a parcel waits for its recipient
#   overdue         not collected in time: on the courier's retrieval list
#   return_waiting  a return dropped off: on the courier's retrieval list
#   send_waiting    an outbound parcel a villager dropped off with a send
#                   code (locker.send_dropoff): on the retrieval list
#   inspect         a power cut left the content unknown: courier must check
#   out_of_service  door or lock fault

SIZES = ("S", "M", "L", "XL")
FREE, RESERVED, OCCUPIED, OVERDUE, RETURN_WAITING, INSPECT, OUT_OF_SERVICE = (
    "free", "reserved", "occupied", "overdue", "return_waiting", "inspect", "out_of_service")
SEND_WAITING = "send_waiting"
STATES = (FREE, RESERVED, OCCUPIED, OVERDUE, RETURN_WAITING, INSPECT, OUT_OF_SERVICE, SEND_WAITING)
# A parcel is inside.
HOLDS_PARCEL = (OCCUPIED, OVERDUE, RETURN_WAITING, SEND_WAITING)
# The courier must come and take something out (or look).
RETRIEVAL = (OVERDUE, RETURN_WAITING, INSPECT, SEND_WAITING)
