"""The real-time daemon: ports, clock, recorder, engine, scheduler, session, control."""
