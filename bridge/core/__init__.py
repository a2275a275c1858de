"""The bridge's policy and wiring: the Bridge, Matrix -> IRC, IRC -> Matrix, portals.

Also access ([permissions], portal limits), privacy, other bridges' users, media links,
provisioning and third-party lookups. It runs on the threads that hand it work: request
threads (AS API queries, provisioning), the inbox thread (Matrix -> IRC), the IRC thread (IRC
events, recorded for the senders) and the senders. It imports no Flask.
"""
