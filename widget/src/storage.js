// What the widget remembers: localStorage, shared by the visitor's tabs, or memory when storage
// is blocked or throws. Keys (prefixed "exw_"): "v" the visitor id, "s" the session id, "c" the
// consent ("10": analytics granted, marketing not).

const memory = {};

/** store(key) reads, store(key, value) writes, store(key, null) deletes. */
export const store = (key, value) => {
  try {
    const storage = localStorage;
    if (value === undefined) return storage.getItem("exw_" + key) ?? memory[key];
    value === null ? storage.removeItem("exw_" + key) : storage.setItem("exw_" + key, value);
  } catch (e) {
    if (value === undefined) return memory[key];
  }
  memory[key] = value;
};

/** `length` random characters from [0-9a-z]. */
export const randomId = (length) => {
  let id = "";
  for (const byte of crypto.getRandomValues(new Uint8Array(length))) id += (byte % 36).toString(36);
  return id;
};

/** Visitor and session ids: 8 to 64 characters from [A-Za-z0-9_-]. */
export const ID = /^[\w-]{8,64}$/;
