-- Since when each node has beaten without a gap longer than a lease. A node takes over another
-- node's expired leases only once it has itself been steady for a lease: after an outage of the
-- database (or of the network) every lease has run out, and the nodes coming back must first
-- renew their own rather than take each other's work — work the node it belongs to may have
-- done meanwhile from memory (results fetched during the outage, recorded when it is back).
ALTER TABLE nodes ADD COLUMN beating_since BIGINT NOT NULL DEFAULT 0;
