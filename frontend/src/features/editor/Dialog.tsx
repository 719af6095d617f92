// A modal on the platform's own <dialog> (focus trapped, the rest inert, a role and a
// name for screen readers and tests).
import { type ReactNode, useEffect, useId, useRef } from "react";

interface Props {
  title: string;
  children: ReactNode;
  /** Esc closes it; without this, Esc does nothing (a choice must be made). */
  onClose?: () => void;
  className?: string;
}

export function Dialog({ title, children, onClose, className }: Props) {
  const ref = useRef<HTMLDialogElement | null>(null);
  const id = useId();
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (!dialog.open) dialog.showModal?.();
    return () => dialog.close?.();
  }, []);
  return (
    <dialog
      ref={ref}
      aria-labelledby={id}
      className={`dialog ${className ?? ""}`}
      onCancel={(event) => {
        event.preventDefault();
        onClose?.();
      }}
    >
      <h2 id={id}>{title}</h2>
      {children}
    </dialog>
  );
}
