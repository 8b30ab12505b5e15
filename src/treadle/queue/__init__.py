"""Work Queue: manager, worker and the protocol-9 wire format between them."""
