"""On-site gateway: durable store-and-forward between outlet devices and the central platform."""
