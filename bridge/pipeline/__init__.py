"""The durable queues between the homeserver and IRC, and the keyed worker lanes.

HS -> IRC: request threads store pushed events; the inbox thread hands them to the core in
order and marks them done. IRC -> HS: the recorder makes IRC lines durable (called on the IRC
thread), the homeserver senders (a pool of threads, in order per room) deliver them.
"""
