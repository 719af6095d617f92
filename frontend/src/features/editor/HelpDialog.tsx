import { Dialog } from "./Dialog";
import { SHORTCUTS } from "./shortcuts";

export function HelpDialog({ readOnly, onClose }: { readOnly: boolean; onClose: () => void }) {
  const shown = SHORTCUTS.filter((s) => !readOnly || !s.edit);
  return (
    <Dialog title="Keyboard shortcuts" onClose={onClose} className="help">
      <table>
        <thead>
          <tr>
            <th scope="col">Keys</th>
            <th scope="col">Action</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((s) => (
            <tr key={s.keys}>
              <td>
                <kbd>{s.keys}</kbd>
              </td>
              <td>{s.action}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <div className="actions">
        {/* eslint-disable-next-line jsx-a11y/no-autofocus -- a modal dialog moves focus into itself */}
        <button type="button" className="primary" onClick={onClose} autoFocus>
          Close
        </button>
      </div>
    </Dialog>
  );
}
