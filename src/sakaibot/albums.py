"""Albums: the images of one ``--n`` request, held until each has ended, then sent together.

Each image is its own job (its own queue place, seed, retries, cache entry and
breaker verdict); this module only gathers how they ended. An image that is
made is held here (already kept on disk and noted as being delivered); one that
could not be made is named with its reason. When every image of the album has
ended, :meth:`Albums.made` or :meth:`Albums.failed` returns the whole
:class:`Gathering`, and the pipeline sends what was made as one album with one
caption that names each image's seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sakaibot.captions import Caption, CaptionFacts, build_caption, job_tag
from sakaibot.chat.port import OutgoingImage
from sakaibot.i18n import ENGLISH, N_, Texts
from sakaibot.jobs import Album, Job


@dataclass(frozen=True)
class MadeImage:
    """An album image that is ready, with what the album's caption needs of it."""

    job: Job
    outgoing: OutgoingImage
    facts: CaptionFacts


@dataclass(frozen=True)
class MissingImage:
    """An album image that could not be made (or was cancelled), and why, in short."""

    index: int
    job_id: str
    seed: int | None
    #: The error's kind (``worker_timeout``), told in a few words by :func:`short_reason`.
    kind: str


@dataclass
class Gathering:
    """The endings of one album's images so far."""

    album: Album
    made: dict[int, MadeImage] = field(default_factory=dict)
    missing: dict[int, MissingImage] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.made) + len(self.missing) >= self.album.size

    def in_order(self) -> list[MadeImage]:
        return [self.made[index] for index in sorted(self.made)]

    def reasons(self, texts: Texts = ENGLISH) -> str:
        """Why the missing images are missing, each named by its place."""
        return "; ".join(
            texts.gettext(
                "{place}: {reason}", place=part.index + 1, reason=short_reason(part.kind, texts)
            )
            for part in (self.missing[i] for i in sorted(self.missing))
        )

    def caption(self) -> Caption:
        """One caption for the album: the first image's facts, and every image's seed.

        In the album's language; in a right-to-left one each seed and ``#id`` is isolated.
        """
        texts = self.album.texts
        first = self.in_order()[0]
        variants: list[str] = []
        for index in range(self.album.size):
            made = self.made.get(index)
            if made is not None:
                seed = made.job.request.options.seed
                tag = job_tag(made.job.id)
                variants.append(
                    texts.gettext(
                        "{place}: seed {seed} {tag}", place=index + 1, seed=str(seed), tag=tag
                    )
                    if seed is not None
                    else texts.gettext("{place}: made {tag}", place=index + 1, tag=tag)
                )
            elif index in self.missing:
                variants.append(
                    texts.gettext(
                        "{place}: not made ({reason})",
                        place=index + 1,
                        reason=short_reason(self.missing[index].kind, texts),
                    )
                )
        return build_caption(
            replace(
                first.facts,
                seed=None,
                job_id=self.album.id,
                from_cache=all(part.facts.from_cache for part in self.made.values()),
                elapsed_s=max(part.facts.elapsed_s for part in self.made.values()),
                variants=tuple(variants),
            ),
            texts=texts,
        )


#: A few words for each way an album image can end without being made.
_SHORT_REASONS: dict[str, str] = {
    "worker_unavailable": N_("worker unavailable"),
    "worker_timeout": N_("worker timeout"),
    "worker_error": N_("worker error"),
    "worker_auth": N_("worker refused our key"),
    "worker_bad_request": N_("request refused by the worker"),
    "content_filtered": N_("content filtered"),
    "quota_exhausted": N_("daily quota used up"),
    "paused_until_reset": N_("daily quota used up"),
    "invalid_image": N_("not a valid image"),
    "image_too_large": N_("image too large"),
    "model_unavailable": N_("model paused"),
    "model_gone": N_("model removed"),
    "cancelled": N_("cancelled"),
    "delivery_failed": N_("could not be sent"),
}


def short_reason(kind: str, texts: Texts = ENGLISH) -> str:
    """An error kind as a few words for the album's caption (``worker_timeout``)."""
    reason = _SHORT_REASONS.get(kind)
    if reason is None:
        return texts.gettext("failed")
    return texts.gettext(reason)


class Albums:
    """The albums whose images are still being made, by album id."""

    def __init__(self) -> None:
        self._gatherings: dict[str, Gathering] = {}

    def _gathering(self, album: Album) -> Gathering:
        gathering = self._gatherings.get(album.id)
        if gathering is None:
            gathering = self._gatherings[album.id] = Gathering(album)
        return gathering

    def made(self, job: Job, outgoing: OutgoingImage, facts: CaptionFacts) -> Gathering | None:
        """Hold a made image; the whole album once every image has ended."""
        assert job.album is not None
        gathering = self._gathering(job.album)
        if job.album_index not in gathering.made:
            gathering.made[job.album_index] = MadeImage(job, outgoing, facts)
            job.album.made += 1
        return self._ended(gathering, job.album_index)

    def failed(self, album: Album, part: MissingImage) -> Gathering | None:
        """Note an image that will not be made; the whole album once every image has ended."""
        gathering = self._gathering(album)
        if part.index not in gathering.missing and part.index not in gathering.made:
            gathering.missing[part.index] = part
            album.failed += 1
        return self._ended(gathering, part.index)

    def _ended(self, gathering: Gathering, index: int) -> Gathering | None:
        gathering.album.ended.add(index)
        gathering.album.statuses.pop(index, None)
        if not gathering.complete:
            return None
        del self._gatherings[gathering.album.id]
        return gathering
