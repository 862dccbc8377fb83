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
    reason: str


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

    def reasons(self) -> str:
        """Why the missing images are missing, each named by its place."""
        return "; ".join(
            f"{part.index + 1}: {part.reason}"
            for part in (self.missing[i] for i in sorted(self.missing))
        )

    def caption(self) -> Caption:
        """One caption for the album: the first image's facts, and every image's seed."""
        first = self.in_order()[0]
        variants: list[str] = []
        for index in range(self.album.size):
            made = self.made.get(index)
            if made is not None:
                seed = made.job.request.options.seed
                named = f"seed {seed}" if seed is not None else "made"
                variants.append(f"{index + 1}: {named} {job_tag(made.job.id)}")
            elif index in self.missing:
                variants.append(f"{index + 1}: not made ({self.missing[index].reason})")
        return build_caption(
            replace(
                first.facts,
                seed=None,
                job_id=self.album.id,
                from_cache=all(part.facts.from_cache for part in self.made.values()),
                elapsed_s=max(part.facts.elapsed_s for part in self.made.values()),
                variants=tuple(variants),
            )
        )


def short_reason(kind: str) -> str:
    """An error kind as a few words for the album's caption (``worker_timeout``)."""
    return kind.replace("_", " ")


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
        gathering.album.texts.pop(index, None)
        if not gathering.complete:
            return None
        del self._gatherings[gathering.album.id]
        return gathering

    def holding(self) -> int:
        """How many albums wait for images still on their way."""
        return len(self._gatherings)
