"""Redis mode: several front ends and generation workers acting as one bot.

- :mod:`~sakaibot.shared.interfaces`: what the parts below ask of the shared store;
- :mod:`~sakaibot.shared.backend`: the store on Redis (the only module importing ``redis``);
- :mod:`~sakaibot.shared.generator`: a front end's generator, handing jobs to the queue;
- :mod:`~sakaibot.shared.worker`: ``sakaibot worker``, taking jobs and answering them;
- :mod:`~sakaibot.shared.allowance`: rate windows shared by every front end;
- :mod:`~sakaibot.shared.cache`: the result cache shared by every front end;
- :mod:`~sakaibot.shared.outage`: one warning a second while Redis is away.

The design, what it guarantees and what it does not:
``docs/image-generation/architecture/shared-queue.md``.
"""
