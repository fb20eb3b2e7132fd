// Uploads: every file is its own request, so each has its own progress bar and its own
// answer from the server.
import { uploadForm } from './api.js';
import { $, el, formatBytes, percent } from './dom.js';

export function initUpload(app) {
  const input = $('upload-input');
  const dropzone = $('upload-dropzone');
  const list = $('upload-list');
  const workoutInput = $('upload-workout');
  const captionInput = $('upload-caption');
  const queue = [];
  let running = false;

  function row(file) {
    const name = file.name || 'unnamed file';
    const bar = el('progress', { attrs: { max: 100, value: 0, 'aria-label': `Upload of ${name}` } });
    const figure = el('span', { className: 'progress-text', text: '0%', attrs: { 'aria-hidden': 'true' } });
    const result = el('p', { className: 'result', text: 'Waiting…' });
    const li = el('li', { className: 'transfer' },
      el('div', { className: 'transfer-head' },
        el('span', { className: 'filename', text: name, attrs: { title: name } }),
        el('span', { className: 'muted', text: formatBytes(file.size) })),
      el('div', { className: 'progress-row' }, bar, figure),
      result);
    return { li, bar, figure, result, name };
  }

  function addFiles(files) {
    const chosen = Array.from(files || []);
    if (!chosen.length) return;
    const workoutId = workoutInput.value.trim();
    const caption = captionInput.value.trim();
    for (const file of chosen) {
      const view = row(file);
      list.prepend(view.li);
      queue.push({ file, workoutId, caption, view });
    }
    app.announce(`Uploading ${chosen.length} file${chosen.length === 1 ? '' : 's'}.`);
    pump();
  }

  async function send({ file, workoutId, caption, view }) {
    const form = new FormData();
    if (workoutId) form.append('workoutId', workoutId);
    if (caption) form.append('caption', caption);
    form.append('file', file, file.name);
    view.result.textContent = 'Uploading…';
    view.li.classList.add('active');
    const show = (done, total) => {
      const value = percent(done, total);
      view.bar.value = value;
      view.figure.textContent = `${value}%`;
    };
    try {
      const body = await uploadForm('/api/media', form, show);
      const errors = body && Array.isArray(body.errors) ? body.errors : [];
      const items = body && Array.isArray(body.items) ? body.items : [];
      if (!items.length && errors.length) throw new Error(errors[0].message || 'Not accepted.');
      show(1, 1);
      view.li.classList.add('done');
      view.result.replaceChildren('Uploaded. ', el('a', { text: 'See it in the gallery', attrs: { href: '#/gallery' } }));
      app.announce(`${view.name} uploaded.`);
      app.galleryChanged();
    } catch (failure) {
      view.li.classList.add('failed');
      view.result.textContent = failure.message;
      view.result.setAttribute('role', 'alert');
      app.announce(`${view.name} was not uploaded: ${failure.message}`);
      if (failure.status === 401) queue.length = 0;
    } finally {
      view.li.classList.remove('active');
    }
  }

  async function pump() {
    if (running) return;
    running = true;
    try {
      while (queue.length) await send(queue.shift());
    } finally {
      running = false;
    }
  }

  input.addEventListener('change', () => {
    addFiles(input.files);
    input.value = '';
  });

  for (const name of ['dragenter', 'dragover']) {
    dropzone.addEventListener(name, (event) => {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = 'copy';
      dropzone.classList.add('dragging');
    });
  }
  dropzone.addEventListener('dragleave', (event) => {
    if (!dropzone.contains(event.relatedTarget)) dropzone.classList.remove('dragging');
  });
  dropzone.addEventListener('drop', (event) => {
    event.preventDefault();
    dropzone.classList.remove('dragging');
    addFiles(event.dataTransfer ? event.dataTransfer.files : []);
  });
  // A file dropped next to the drop zone would otherwise replace the page with the file.
  window.addEventListener('dragover', (event) => event.preventDefault());
  window.addEventListener('drop', (event) => event.preventDefault());

  return {
    reset() {
      queue.length = 0;
      list.replaceChildren();
      workoutInput.value = '';
      captionInput.value = '';
    },
  };
}
