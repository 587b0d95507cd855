// The overlay: everything that draws offers. A separate script, loaded by the core when the first
// offer is armed or sent (see ../offers.js). Running, it hands the core a function that creates
// it: create(lent) takes what the core lends ({send, valid, preview}) and returns the overlay's
// functions.

import { listen, quietly } from "../util.js";
import {
  closeDialog,
  dialog,
  dropPill,
  focusables,
  host,
  lend,
  modal,
  mount,
  render,
  show,
  withdraw,
} from "./dialog.js";
import { phone, reward } from "./parts.js";

const create = (lent) => {
  lend(lent);
  // Focus that leaves the open popup (a click or a script elsewhere on the page) comes back;
  // the non-modal layouts let it go.
  listen(
    document,
    "focusin",
    (e) => dialog && modal && e.target != host && focusables()[0].focus()
  );
  return {
    mount,
    render, // draw this offer now (an armed offer on exit intent, the admin's preview)
    show, // an offer sent by the server; true when it opened a dialog
    open: () => !!dialog,
    withdraw,
    reward, // the code an email capture gives, once the server has it
    phone, // the server's answer to an SMS capture's number or code
    clear: () => (closeDialog(), dropPill()),
  };
};

quietly(() => window.exitwidget.overlay(create))();
