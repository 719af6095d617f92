// The canvas library and its React binding: the editor's largest code by far, in a
// chunk of its own that the editor loads once its first frame is on screen. Only
// libraries here, nothing of the editor's: a chunk that imported the editor's own
// modules would make Rollup turn the editor page's chunk into an unnamed shared one,
// and the server would no longer know what to preload for the editor's address.
import "konva/lib/shapes/Image.js";
import "konva/lib/shapes/Rect.js";
import "konva/lib/shapes/Transformer.js";
import Konva from "konva/lib/Core.js";

// Hit graphs are not redrawn while dragging (Konva's default, stated): a drag redraws
// the boxes' scene only.
Konva.hitOnDragEnabled = false;

export { Konva };
export { Image, Layer, Rect, Shape, Stage, Transformer } from "react-konva/lib/ReactKonvaCore.js";
