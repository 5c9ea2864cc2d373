# The counter scanner: a scan engine on a UART registers parcels at the outlet.
