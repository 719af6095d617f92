import { useInfiniteQuery } from "@tanstack/react-query";
import { useVirtualizer } from "@tanstack/react-virtual";
import { useEffect, useMemo, useRef, useState } from "react";
import { Link } from "react-router";
import { ErrorMessage } from "../../components/ErrorMessage";
import { type ImageItem, type ImageStatus, imagesQuery, type Split } from "./queries";

const CELL = 176; // px: a 160 px thumbnail, its caption and the gap
const ROW = 196;

/** Columns that fit the grid's width, following resizes. */
function useColumns(element: HTMLElement | null): number {
  const [columns, setColumns] = useState(4);
  useEffect(() => {
    if (!element) return;
    const measure = () => setColumns(Math.max(1, Math.floor(element.clientWidth / CELL)));
    measure();
    const observer = new ResizeObserver(measure);
    observer.observe(element);
    return () => observer.disconnect();
  }, [element]);
  return columns;
}

// A row that appears while the grid scrolls waits this long before it asks for its
// thumbnails: flinging through 100k images must not queue thousands of requests for
// rows that were on screen for a frame.
const SCROLL_SETTLE_MS = 150;

function Thumbnail({ image, deferred }: { image: ImageItem; deferred: boolean }) {
  const [ready, setReady] = useState(!deferred);
  useEffect(() => {
    if (ready) return;
    const timer = setTimeout(() => setReady(true), SCROLL_SETTLE_MS);
    return () => clearTimeout(timer);
  }, [ready]);
  return (
    <Link
      className="thumb-link"
      to={`/projects/${image.project_id}/images/${image.id}`}
      aria-label={`${image.filename}, ${image.status}`}
    >
      <figure className="thumb">
        {ready ? (
          <img
            src={`/api/images/${image.id}/thumbnail`}
            alt={image.filename}
            loading="lazy"
            decoding="async"
            width={160}
            height={160}
          />
        ) : (
          <span className="thumb-placeholder" aria-hidden="true" />
        )}
        <figcaption>
          <span className="thumb-name" title={image.filename}>
            {image.filename}
          </span>
          <span className={`status status-${image.status}`}>{image.status}</span>
        </figcaption>
      </figure>
    </Link>
  );
}

function emptyText(status: ImageStatus | null, split: Split | null): string {
  if (!status && !split) return "No images in this project yet.";
  const what = status ? `${status} images` : "images";
  return split ? `No ${what} in the ${split} split.` : `No ${what}.`;
}

interface Props {
  projectId: number;
  status: ImageStatus | null;
  split: Split | null;
  total: number | undefined;
}

/**
 * Every image of the project (or of one status) as a grid that only renders the rows
 * in view, fetching the next keyset page as the end comes near.
 */
export function ImageGrid({ projectId, status, split, total }: Props) {
  const query = useInfiniteQuery(imagesQuery(projectId, status, split));
  const [scroller, setScroller] = useState<HTMLDivElement | null>(null);
  const columns = useColumns(scroller);
  // Once per page fetched, not per scroll frame (100k items).
  const images = useMemo(() => query.data?.pages.flatMap((page) => page.items) ?? [], [query.data]);
  const rowCount = Math.ceil(images.length / columns);
  const scrollRef = useRef<HTMLDivElement | null>(null);
  scrollRef.current = scroller;

  const virtualizer = useVirtualizer({
    count: rowCount,
    getScrollElement: () => scrollRef.current,
    estimateSize: () => ROW,
    overscan: 3,
  });
  const rows = virtualizer.getVirtualItems();
  const lastRow = rows.at(-1)?.index ?? -1;
  const { hasNextPage, isFetchingNextPage, fetchNextPage } = query;

  useEffect(() => {
    if (hasNextPage && !isFetchingNextPage && lastRow >= rowCount - 4) void fetchNextPage();
  }, [lastRow, rowCount, hasNextPage, isFetchingNextPage, fetchNextPage]);

  if (query.isError) return <ErrorMessage error={query.error} />;

  return (
    <>
      <p className="muted" aria-live="polite">
        {query.isPending
          ? "Loading images…"
          : images.length === 0
            ? emptyText(status, split)
            : `${images.length.toLocaleString()}${total !== undefined ? ` of ${total.toLocaleString()}` : ""} images loaded`}
      </p>
      <div
        ref={setScroller}
        className="grid-scroller"
        role="region"
        aria-label="Images"
        // eslint-disable-next-line jsx-a11y/no-noninteractive-tabindex -- a scrollable region: focusable so keyboard users can scroll it
        tabIndex={0}
      >
        <div className="grid-inner" style={{ height: virtualizer.getTotalSize() }}>
          {rows.map((row) => (
            <div
              key={row.key}
              className="grid-row"
              style={{ transform: `translateY(${row.start}px)`, height: ROW }}
            >
              {images.slice(row.index * columns, row.index * columns + columns).map((image) => (
                <Thumbnail key={image.id} image={image} deferred={virtualizer.isScrolling} />
              ))}
            </div>
          ))}
        </div>
      </div>
    </>
  );
}
