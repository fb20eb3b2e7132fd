// The gallery: newest first, filtered by workout, pages loaded as the end comes into view.
import { api } from './api.js';
import { $, clear, el, formatBytes, formatDate, say } from './dom.js';

const PAGE_SIZE = 24;

function contentUrl(item) {
  return `/api/media/${encodeURIComponent(item.id)}/content`;
}

function itemsOf(page) {
  if (Array.isArray(page)) return page;
  return (page && Array.isArray(page.items)) ? page.items : [];
}

function nextCursorOf(page) {
  if (!page || Array.isArray(page)) return null;
  return page.nextCursor || page.cursor || null;
}

export function initGallery(app) {
  const grid = $('gallery-grid');
  const more = $('gallery-more');
  const loading = $('gallery-loading');
  const empty = $('gallery-empty');
  const error = $('gallery-error');
  const filterForm = $('gallery-filter');
  const workoutInput = $('gallery-workout');
  const workoutList = $('gallery-workouts');
  const clearButton = $('gallery-clear');

  let cursor = null;
  let filter = '';
  let busy = false;
  let generation = 0;
  let stale = true;
  const workouts = new Set();

  function rememberWorkout(workoutId) {
    if (!workoutId || workouts.has(workoutId)) return;
    workouts.add(workoutId);
    workoutList.append(el('option', { attrs: { value: workoutId } }));
  }

  function mediaElement(item) {
    const name = item.filename || 'untitled';
    if (String(item.mimeType || '').startsWith('video/')) {
      const video = el('video', {
        className: 'media',
        attrs: {
          controls: true, preload: 'metadata', playsinline: true, src: contentUrl(item),
          'aria-label': `Video: ${name}`,
        },
      });
      // Browsers play MP4 but rarely QuickTime or AVI: offer the file itself instead.
      video.addEventListener('error', () => {
        video.replaceWith(el('div', { className: 'media no-preview' },
          el('p', { text: 'This video cannot be played in the browser.' }),
          el('a', { className: 'button', text: 'Download it', attrs: { href: contentUrl(item), download: name } })));
      }, { once: true });
      return video;
    }
    return el('img', {
      className: 'media',
      attrs: {
        src: contentUrl(item), alt: item.caption || `Photo: ${name}`, loading: 'lazy',
        decoding: 'async', width: item.width, height: item.height,
      },
    });
  }

  function captionNode(caption) {
    return caption
      ? el('p', { className: 'caption', text: caption })
      : el('p', { className: 'caption muted', text: 'No caption' });
  }

  function card(item) {
    const name = item.filename || 'untitled';
    const li = el('li', { className: 'card', attrs: { 'data-media-id': item.id } });
    let caption = captionNode(item.caption);
    const meta = el('p', { className: 'meta' },
      el('span', { className: 'filename', text: name, attrs: { title: name } }),
      el('span', { text: [formatDate(item.createdAt), formatBytes(item.sizeBytes)]
        .filter(Boolean).join(' · ') }));
    if (item.workoutId) {
      rememberWorkout(item.workoutId);
      const chip = el('button', {
        className: 'chip', text: item.workoutId,
        attrs: { type: 'button', 'aria-label': `Show only workout ${item.workoutId}` },
      });
      chip.addEventListener('click', () => applyFilter(item.workoutId));
      meta.append(chip);
    }
    const body = el('div', { className: 'card-body' }, caption, meta);

    const editButton = el('button', {
      text: 'Edit caption',
      attrs: { type: 'button', 'aria-expanded': 'false', 'aria-label': `Edit caption of ${name}` },
    });
    const deleteButton = el('button', {
      className: 'danger', text: 'Delete',
      attrs: { type: 'button', 'aria-label': `Delete ${name}` },
    });
    const actions = el('div', { className: 'card-actions' }, editButton, deleteButton);

    const textareaId = `caption-${item.id}`;
    const textarea = el('textarea', {
      attrs: { id: textareaId, name: 'caption', maxlength: 2000, rows: 3 },
    });
    const formError = el('p', { className: 'error', attrs: { role: 'alert' }, hidden: true });
    const cancel = el('button', { text: 'Cancel', attrs: { type: 'button' } });
    const form = el('form', { className: 'caption-form', attrs: { method: 'post' }, hidden: true },
      el('label', { text: 'Caption', attrs: { for: textareaId } }),
      textarea, formError,
      el('div', { className: 'form-actions' },
        el('button', { className: 'primary', text: 'Save caption', attrs: { type: 'submit' } }),
        cancel));

    function closeEditor() {
      form.hidden = true;
      actions.hidden = false;
      editButton.setAttribute('aria-expanded', 'false');
      editButton.focus();
    }

    editButton.addEventListener('click', () => {
      textarea.value = item.caption || '';
      say(formError, '');
      form.hidden = false;
      actions.hidden = true;
      editButton.setAttribute('aria-expanded', 'true');
      textarea.focus();
    });
    cancel.addEventListener('click', closeEditor);
    form.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') closeEditor();
    });
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const value = textarea.value;
      for (const control of form.elements) control.disabled = true;
      try {
        const updated = await api(`/api/media/${encodeURIComponent(item.id)}`, {
          method: 'PATCH', json: { caption: value },
        });
        item.caption = updated && typeof updated.caption === 'string' ? updated.caption : value;
        const replacement = captionNode(item.caption);
        caption.replaceWith(replacement);
        caption = replacement;
        const media = li.querySelector('img.media');
        if (media) media.alt = item.caption || `Photo: ${name}`;
        closeEditor();
        app.announce('Caption saved.');
      } catch (failure) {
        say(formError, failure.message);
      } finally {
        for (const control of form.elements) control.disabled = false;
      }
    });

    deleteButton.addEventListener('click', async () => {
      const confirmed = await app.confirm(`Delete “${name}”? This cannot be undone.`);
      if (!confirmed) {
        deleteButton.focus();
        return;
      }
      deleteButton.disabled = true;
      try {
        await api(`/api/media/${encodeURIComponent(item.id)}`, { method: 'DELETE' });
        const next = li.nextElementSibling || li.previousElementSibling;
        li.remove();
        empty.hidden = grid.children.length > 0 || Boolean(cursor);
        app.announce(`Deleted ${name}.`);
        const focusTarget = next ? next.querySelector('button') : $('gallery-title');
        focusTarget.focus();
      } catch (failure) {
        deleteButton.disabled = false;
        say(error, failure.message);
      }
    });

    li.append(el('figure', {}, mediaElement(item), body), actions, form);
    return li;
  }

  async function loadPage() {
    if (busy) return;
    busy = true;
    const mine = generation;
    loading.hidden = false;
    more.hidden = true;
    grid.setAttribute('aria-busy', 'true');
    try {
      const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (filter) params.set('workoutId', filter);
      if (cursor) params.set('cursor', cursor);
      const page = await api(`/api/media?${params}`);
      if (mine !== generation) return;
      const items = itemsOf(page);
      const firstPage = !cursor;
      for (const item of items) grid.append(card(item));
      if (!firstPage && items.length) app.announce(`${items.length} more loaded.`);
      cursor = nextCursorOf(page);
      say(error, '');
      empty.hidden = grid.children.length > 0;
      if (filter) {
        empty.firstChild.textContent = 'No photos or videos for this workout. ';
      } else {
        empty.firstChild.textContent = 'No photos or videos yet. ';
      }
    } catch (failure) {
      if (mine === generation && failure.status !== 401) say(error, failure.message);
    } finally {
      if (mine === generation) {
        busy = false;
        loading.hidden = true;
        more.hidden = !cursor;
        grid.setAttribute('aria-busy', 'false');
      }
    }
  }

  function reload() {
    generation += 1;
    busy = false;
    cursor = null;
    clear(grid);
    empty.hidden = true;
    say(error, '');
    loadPage();
  }

  function applyFilter(workoutId) {
    filter = workoutId.trim();
    workoutInput.value = filter;
    clearButton.hidden = !filter;
    // Kept in the address so that a reload or a bookmark shows the same selection.
    const query = filter ? `?${new URLSearchParams({ workout: filter })}` : '';
    window.history.replaceState(null, '', `#/gallery${query}`);
    reload();
  }

  filterForm.addEventListener('submit', (event) => {
    event.preventDefault();
    applyFilter(workoutInput.value);
  });
  clearButton.addEventListener('click', () => {
    applyFilter('');
    workoutInput.focus();
  });
  more.addEventListener('click', () => loadPage());

  // The "Load more" button doubles as the sentinel: pages load by themselves as it scrolls
  // into view, and it stays usable from the keyboard.
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting) && cursor && !busy && app.isVisible('gallery')) {
      loadPage();
    }
  }, { rootMargin: '400px 0px' });
  observer.observe(more);

  return {
    enter(params) {
      const wanted = (params && params.get('workout')) || '';
      if (wanted !== filter) {
        stale = false;
        applyFilter(wanted);
      } else if (stale) {
        stale = false;
        reload();
      }
    },
    changed() {
      stale = true;
    },
    reset() {
      generation += 1;
      stale = true;
      filter = '';
      workoutInput.value = '';
      clearButton.hidden = true;
      cursor = null;
      busy = false;
      clear(grid);
      clear(workoutList);
      workouts.clear();
    },
  };
}
