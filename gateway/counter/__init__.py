"""Counter acceptance of outbound parcels (寄件).

The counter's hardware hangs off the gateway box over serial/USB: an
electronic scale, a thermal label printer (ZPL or TSPL) and an ESC/POS
receipt printer. The modules, one job each:

``scale_frames`` one scale frame (MT-SICS, reversed-digit ``=``, ``ST,GS,``) to grams
``scale``        the serial scale: stable weight, errors, never hangs
``label``        the shipping label in ZPL or TSPL (Code 128 waybill)
``printers``     the printers' ports and their status (out of paper)
``receipt``      the customer's receipt and the pickup slip (ESC/POS)
``parcel_form``  the clerk's input (sender, recipient, service), checked
``acceptance``   the flow: box, weight, form, waybill, postage, label, ``counter.accept``
``from_config``  the desk that ``[counter]`` in ``gateway.toml`` describes (``gateway/config.py``)

The platform's documents these work from are shared with the central
service, which signs them: ``common/platform_docs.py`` (Ed25519, the gateway
verifies but cannot forge), ``common/box_catalogue.py`` (the standard
boxes), ``common/tariff.py`` (postage in integer fen, offline).

The JSON API is ``gateway/http/counter.py``.
"""
