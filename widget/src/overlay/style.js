// The overlay's stylesheet, inside its shadow root: the page's CSS cannot reach it. Classes:
// w wrapper (theme variables), b backdrop, d dialog, with its layout: m popup, s corner card
// (slide_in), a bar (u at the top, v at the bottom); x close button, c call to action (n the
// two-step's "no"), y the two-step's buttons, k discount code, t countdown, g product grid,
// f email form, p teaser pill. On a phone the popup and the card become a bottom sheet and the
// products one row that scrolls sideways (bars stay bars).

export const STYLE =
  "*{box-sizing:border-box;margin:0;font:inherit;color:inherit}" +
  ".w{--ac:#c62828;--bg:#fff;--tx:#1d1d1f;--r:14px;font:15px/1.45 system-ui,sans-serif;color:var(--tx)}" +
  ".b{position:fixed;inset:0;background:#0008}" +
  ".d{position:fixed;max-height:92vh;overflow:auto;background:var(--bg);border-radius:var(--r);padding:28px 24px 24px;box-shadow:0 12px 48px #0006}" +
  ".m{left:50%;top:50%;transform:translate(-50%,-50%);width:min(92vw,440px);animation:i .2s ease-out}" +
  "@keyframes i{from{transform:translate(-50%,-46%)}}" +
  "@media (prefers-reduced-motion:reduce){.d{animation:none}}" +
  ".s{right:16px;bottom:16px;width:min(92vw,360px);max-height:80vh}.s .g{grid-template-columns:repeat(3,1fr)}" +
  ".a{left:0;right:0;max-height:50vh;border-radius:0;padding:8px 52px 8px 16px;display:flex;flex-wrap:wrap;align-items:center;gap:4px 16px}" +
  ".u{top:0}.v{bottom:0}.a *{margin:0}.a h2{font-size:1.1em}.a .c{width:auto;padding:8px 16px}.a .x{top:4px}" +
  ".a .g{display:flex;overflow-x:auto;flex-basis:100%}.a .g>*{flex:0 0 96px}" +
  "h2{font-size:1.4em;font-weight:700;line-height:1.2;margin:0 32px 8px 0}" +
  "p{margin-bottom:12px}" +
  ".x{position:absolute;top:10px;right:10px;width:36px;height:36px;border:0;border-radius:50%;background:none;font-size:24px;cursor:pointer}" +
  ".c{display:block;width:100%;margin-top:12px;padding:12px;border:0;border-radius:8px;background:var(--ac);color:#fff;font-weight:600;text-align:center;text-decoration:none;cursor:pointer}" +
  ".k{display:flex;gap:8px;margin:14px 0 8px}" +
  ".k input{flex:1;min-width:0;padding:8px;border:2px dashed var(--ac);border-radius:8px;background:none;font:700 1.2em monospace;letter-spacing:.08em;text-align:center}" +
  ".k button,.f [type=email]{padding:8px 14px;border:1px solid #0004;border-radius:8px;background:none;cursor:pointer}" +
  ".t{font-size:.9em;opacity:.8}" +
  ".g{display:grid;grid-template-columns:repeat(auto-fill,minmax(118px,1fr));gap:12px;margin:14px 0 4px}" +
  ".g>*{display:flex;flex-direction:column;gap:4px;text-decoration:none;font-size:.88em}" +
  ".g img{width:100%;aspect-ratio:1;object-fit:cover;border-radius:8px;background:#eee}" +
  ".f{display:grid;gap:10px;margin-top:12px}.f label{display:flex;gap:8px;font-size:.88em}" +
  ".y{display:flex;gap:8px}.n{background:none;color:var(--tx);border:1px solid #0004}" +
  "@media (max-width:600px){.m,.s{inset:auto 0 0;transform:none;width:auto;max-height:60vh;border-radius:var(--r) var(--r) 0 0;padding:24px 16px 16px;animation:none}" +
  ".g{display:flex;overflow-x:auto;scroll-snap-type:x mandatory}.g>*{flex:0 0 40vw;scroll-snap-align:start}}" +
  ".p{position:fixed;right:16px;bottom:16px;display:flex;border-radius:99px;background:var(--ac);color:#fff;box-shadow:0 4px 18px #0005}" +
  ".p button{padding:10px 14px;border:0;background:none;color:#fff;font-weight:600;cursor:pointer}" +
  ":focus-visible{outline:3px solid var(--ac);outline-offset:2px}";
