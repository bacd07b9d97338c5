// The sound of the abcgen page: a small Web Audio synthesiser written for abcgen, so that
// playback needs no soundfont from the internet. Two voices: a plucked string (Karplus-Strong:
// a burst of noise circulating in a delay line whose averaging filter damps it, as a string
// does) and a reed (a few harmonics with a slow attack and a little vibrato, like an
// accordion). Chords play as a quiet second voice. The notes come from abcjs (setUpAudio);
// the tune is mixed into an AudioBuffer once, then played, looped and saved as WAV.
"use strict";

const AbcgenSynth = (() => {
  const RATE = 44100;
  const pluckCache = new Map();

  function frequency(pitch) {
    return 440 * Math.pow(2, (pitch - 69) / 12);
  }

  // Notes of a rendered abcjs tune: [{time, length, pitch, volume, chord}] in seconds.
  function notesFrom(visualObj, bpm, withChords) {
    const audio = visualObj.setUpAudio({ qpm: bpm, chordsOff: !withChords });
    const meter = visualObj.getMeterFraction();
    const measure = meter && meter.den ? meter.num / meter.den : 1;
    const perWhole = visualObj.millisecondsPerMeasure(bpm) / 1000 / measure;
    const notes = [];
    audio.tracks.forEach((track, index) => {
      for (const event of track) {
        if (event.cmd !== "note" || event.volume <= 0) continue;
        notes.push({
          time: event.start * perWhole,
          length: Math.max(0.03, event.duration * perWhole - (event.gap || 0)),
          pitch: event.pitch,
          volume: event.volume / 127,
          chord: index > 0,
        });
      }
    });
    const end = notes.reduce((last, note) => Math.max(last, note.time + note.length), 0);
    return { notes, seconds: Math.max(end, audio.totalDuration * perWhole) + 0.6 };
  }

  // One plucked note as samples: Karplus-Strong with a brightness set by the pitch.
  function pluckSamples(pitch, seconds) {
    const key = pitch + ":" + Math.round(seconds * 10);
    if (pluckCache.has(key)) return pluckCache.get(key);
    const period = Math.max(2, Math.round(RATE / frequency(pitch)));
    const count = Math.ceil(seconds * RATE);
    const out = new Float32Array(count);
    const line = new Float32Array(period);
    let seed = pitch * 7919 + 13;
    for (let i = 0; i < period; i++) {  // a repeatable noise burst, smoothed a little
      seed = (seed * 16807) % 2147483647;
      line[i] = (seed / 2147483647) * 2 - 1;
    }
    for (let i = 1; i < period; i++) line[i] = 0.6 * line[i] + 0.4 * line[i - 1];
    const damping = 0.996 - Math.min(0.02, pitch / 8000);
    let position = 0;
    for (let i = 0; i < count; i++) {
      const next = (position + 1) % period;
      const value = line[position];
      out[i] = value;
      line[position] = damping * 0.5 * (value + line[next]);
      position = next;
    }
    const fade = Math.min(count, Math.round(0.02 * RATE));  // no click where the note stops
    for (let i = 0; i < fade; i++) out[count - 1 - i] *= i / fade;
    pluckCache.set(key, out);
    return out;
  }

  // Adds one plucked note into the mix.
  function addPluck(mix, note, gainValue) {
    const samples = pluckSamples(note.pitch, Math.min(2.5, note.length + 0.25));
    const first = Math.round(note.time * RATE);
    const release = Math.round((note.time + note.length) * RATE) - first;  // then a short damping
    const count = Math.min(samples.length, mix.length - first);
    let gain = gainValue;
    for (let i = 0; i < count; i++) {
      if (i > release) gain *= 0.9995;
      mix[first + i] += gain * samples[i];
    }
  }

  // One cycle of the reed's wave: a few harmonics, the odd ones stronger, as in a free reed.
  const REED_HARMONICS = [1, 0.55, 0.42, 0.3, 0.22, 0.12, 0.08, 0.05];
  const TABLE_SIZE = 2048;
  function waveTable(harmonics) {
    const table = new Float32Array(TABLE_SIZE + 1);
    const total = harmonics.reduce((sum, amplitude) => sum + amplitude, 0);
    for (let i = 0; i <= TABLE_SIZE; i++) {
      let value = 0;
      harmonics.forEach((amplitude, h) => { value += amplitude * Math.sin(2 * Math.PI * (h + 1) * i / TABLE_SIZE); });
      table[i] = value / total;
    }
    return table;
  }
  const REED = waveTable(REED_HARMONICS);
  const SOFT = waveTable([1, 0.3, 0.1]);

  // Adds one reed note: a wavetable oscillator with a little vibrato, a quick attack, a
  // settling to a sustained level, a short release, and a one-pole low-pass filter.
  function addReed(mix, note, gainValue, soft) {
    const table = soft ? SOFT : REED;
    const first = Math.round(note.time * RATE);
    const held = Math.round(note.length * RATE);
    const count = Math.min(held + Math.round(0.12 * RATE), mix.length - first);
    const step = frequency(note.pitch) * TABLE_SIZE / RATE;
    const smoothing = Math.exp(-2 * Math.PI * (soft ? 900 : 3000) / RATE);
    const attack = 0.02 * RATE, vibratoRate = 2 * Math.PI * 5.2 / RATE;
    const settle = Math.exp(-1 / (0.08 * RATE)), fade = Math.exp(-1 / (0.03 * RATE));
    let phase = 0, filtered = 0, decay = 1, release = 1, vibrato = 1;
    for (let i = 0; i < count; i++) {
      let level;
      if (i < attack) {
        level = i / attack;
      } else {
        decay *= settle;
        level = 0.75 + 0.25 * decay;
      }
      if (i > held) {
        release *= fade;
        level *= release;
      }
      if (!soft && (i & 31) === 0) vibrato = 1 + 0.004 * Math.sin(vibratoRate * i);
      const position = phase | 0;
      const sample = table[position] + (phase - position) * (table[position + 1] - table[position]);
      filtered = sample + smoothing * (filtered - sample);
      mix[first + i] += gainValue * level * filtered;
      phase += step * vibrato;
      if (phase >= TABLE_SIZE) phase -= TABLE_SIZE;
    }
  }

  // The whole tune as an AudioBuffer (mono, 44.1 kHz), mixed here sample by sample: a Web
  // Audio graph of a node or five per note costs seconds to render for a long tune.
  function render(music, instrument) {
    const mix = new Float32Array(Math.ceil(music.seconds * RATE));
    for (const note of music.notes) {
      if (note.chord) {
        addReed(mix, note, 0.12 * note.volume, true);
      } else if (instrument === "reed") {
        addReed(mix, note, 0.45 * note.volume, false);
      } else {
        addPluck(mix, note, 0.5 * note.volume);
      }
    }
    for (let i = 0; i < mix.length; i++) mix[i] = Math.tanh(mix[i]);  // no clipping where notes pile up
    const buffer = new AudioBuffer({ length: mix.length, sampleRate: RATE, numberOfChannels: 1 });
    buffer.copyToChannel(mix, 0);
    return Promise.resolve(buffer);
  }

  function stats(buffer) {
    const data = buffer.getChannelData(0);
    let sum = 0, peak = 0;
    for (let i = 0; i < data.length; i++) {
      sum += data[i] * data[i];
      peak = Math.max(peak, Math.abs(data[i]));
    }
    return { seconds: buffer.duration, rms: Math.sqrt(sum / Math.max(1, data.length)), peak };
  }

  // 16-bit PCM WAV of a mono buffer.
  function wav(buffer) {
    const data = buffer.getChannelData(0);
    const bytes = new DataView(new ArrayBuffer(44 + data.length * 2));
    const text = (offset, value) => { for (let i = 0; i < value.length; i++) bytes.setUint8(offset + i, value.charCodeAt(i)); };
    text(0, "RIFF"); bytes.setUint32(4, 36 + data.length * 2, true); text(8, "WAVE");
    text(12, "fmt "); bytes.setUint32(16, 16, true); bytes.setUint16(20, 1, true); bytes.setUint16(22, 1, true);
    bytes.setUint32(24, buffer.sampleRate, true); bytes.setUint32(28, buffer.sampleRate * 2, true);
    bytes.setUint16(32, 2, true); bytes.setUint16(34, 16, true);
    text(36, "data"); bytes.setUint32(40, data.length * 2, true);
    for (let i = 0; i < data.length; i++) {
      const sample = Math.max(-1, Math.min(1, data[i]));
      bytes.setInt16(44 + i * 2, sample * 32767, true);
    }
    return new Blob([bytes], { type: "audio/wav" });
  }

  return { notesFrom, render, stats, wav };
})();
