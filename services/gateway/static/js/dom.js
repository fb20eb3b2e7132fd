// Small DOM helpers. Text from the server only ever goes in through textContent or an
// attribute value, never through HTML parsing.

export function $(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`missing element #${id}`);
  return node;
}

/** el('li', {className: 'x', attrs: {'aria-label': 'y'}}, 'text', child, ...) */
export function el(tag, options = {}, ...children) {
  const node = document.createElement(tag);
  const { className, attrs, text, hidden } = options;
  if (className) node.className = className;
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value !== undefined && value !== null && value !== false) {
        node.setAttribute(name, value === true ? '' : String(value));
      }
    }
  }
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (hidden) node.hidden = true;
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
}

/** Shows `message` in an element that is hidden when there is nothing to say. */
export function say(node, message) {
  node.textContent = message || '';
  node.hidden = !message;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });

export function formatDate(value) {
  if (!value) return '';
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : dateTime.format(date);
}

export function formatBytes(bytes) {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes)) return '';
  const units = ['bytes', 'KB', 'MB', 'GB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} ${units[0]}` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** "in 3 minutes, at 14:05" for a wait of `seconds`. */
export function formatWait(seconds) {
  const at = timeOnly.format(new Date(Date.now() + seconds * 1000));
  if (seconds < 60) return `in ${seconds} second${seconds === 1 ? '' : 's'}, at ${at}`;
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 120) return `in ${minutes} minute${minutes === 1 ? '' : 's'}, at ${at}`;
  const hours = Math.round(minutes / 60);
  return `in about ${hours} hours, at ${at}`;
}

export function percent(done, total) {
  if (!total) return 0;
  return Math.max(0, Math.min(100, Math.round((done / total) * 100)));
}

/** Sets a <progress> element; no total means an indeterminate bar. */
export function setProgress(bar, done, total) {
  if (total) {
    bar.max = total;
    bar.value = Math.min(done, total);
  } else {
    bar.removeAttribute('value');
  }
}
