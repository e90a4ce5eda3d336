"""Development tools, not part of the product: the synthetic demo collection, a stand-in
KartaView server, and the demo flows behind `make demo` and `make demo-kartaview`."""
