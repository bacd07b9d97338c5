"""Export: MIDI, MusicXML and SVG from ABC, checked note by note against what the ABC asks for.

The fixture tunes in tests/fixtures/export each exercise one piece of folk-tune notation. The
MIDI is read back with mido and compared, in played (expanded) order, with the pitches and
lengths the ABC writes; the MusicXML is read back with music21; the SVG is searched for the
engraved staff, notes and measures.
"""

import re
import shutil
import stat
import sys
from fractions import Fraction
from pathlib import Path

import mido
import pytest
from click.testing import CliRunner

from abcgen.cli import cli
from abcgen.errors import AbcgenError
from abcgen.export import (
    ExportReport,
    export_tunes,
    parse_tune,
    play_order,
    prepare_abc,
    read_tunes,
    slugify,
    write_atomic,
)

FIXTURES = Path(__file__).parent / "fixtures" / "export"
TUNES = ["pickup", "ties", "triplets", "broken", "accidentals", "meters", "endings", "grace", "chords", "sections"]
STEMS = {
    "pickup": "001-pickup-and-repeat",
    "ties": "002-ties",
    "triplets": "003-triplets",
    "broken": "004-broken-rhythm",
    "accidentals": "005-accidentals-and-key-changes",
    "meters": "006-meter-changes",
    "endings": "007-first-and-second-endings",
    "grace": "008-grace-notes",
    "chords": "009-chords-and-rests",
    "sections": "010-two-parts",
}

# What each tune plays, in order, repeats expanded: PITCH:LENGTH in quarter notes, r = rest.
PLAYED = {
    "pickup": "A4:1/2 D5:1 F#5:1/2 D5:1/2 A4:1 F#4:1/2 A4:1/2 D5:2 r:3/2 "
    "A4:1/2 D5:1 F#5:1/2 D5:1/2 A4:1 F#4:1/2 A4:1/2 D5:2",
    "ties": "B4:2 A4:1 G4:4 A4:1 B4:1 C5:3",
    "triplets": "C5:1/3 D5:1/3 E5:1/3 C5:1 G4:1/3 A4:1/3 B4:1/3 C5:1 "
    "C5:2/3 D5:2/3 E5:2/3 E5:1/3 F5:1/3 G5:1/3 G5:1 C5:2",
    "broken": "A4:3/4 B4:1/4 C#5:1/4 D5:3/4 E5:7/8 F#5:1/8 G5:1 A5:2 A4:3/4 F#4:1/4 D4:1",
    "accidentals": "C#5:1 C#5:1 F5:1 F5:1 F#4:1 Bb4:1 Bb4:1 B4:1 "
    "Bb4:1 Bb5:1 E4:1 F#4:1 F4:1 C5:1 Bb4:1 Bb5:1 "
    "F#4:1 C5:1 C#5:1 C#5:1 C5:4",
    "meters": "D4:1 F#4:1 A4:1 D5:3 D5:1/2 C#5:1/2 B4:1/2 A4:1/2 F#4:1/2 D4:1/2 E4:3/2 D4:3/2 F#4:1 A4:1 D5:2",
    "endings": "G4:1 A4:1 B4:1 C5:1 D5:2 G4:1 A4:1 B4:1 C5:1 G5:2 E5:1 D5:1 B4:2 E5:1 D5:1 G4:2",
    # Grace notes take 1/8 of a quarter each from the start of the note they lead into.
    "grace": "G5:1/8 F#5:7/8 E5:1/2 A5:1/8 G5:1/8 F#5:3/4 E5:1/2 B4:1/8 A4:11/8 D5:3/2",
    "chords": "G4:1 B4:1 A4:1 F#4:1 E4:1 r:1 C5:1 r:1 A4:2 r:2 G4:2 G4:2",
    # A second part ending in :| without |: repeats by itself (music21 would play A again).
    "sections": "D4:1/2 G4:1 B4:1 D5:3/2 D4:1/2 G4:1 B4:1 D5:3/2 E5:1/2 D5:1 B4:1 G4:3/2 E5:1/2 D5:1 B4:1 G4:3/2",
}
MEASURES = {
    "pickup": 3,
    "ties": 4,
    "triplets": 5,
    "broken": 2,
    "accidentals": 6,
    "meters": 6,
    "endings": 7,
    "grace": 2,
    "chords": 4,
    "sections": 6,
}
TEMPO = {"pickup": 110, "ties": 140, "triplets": 120, "grace": 165, "chords": 90}  # quarters/minute

STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def midi_number(name: str) -> int:
    """'F#4' -> 66, 'Bb5' -> 82."""
    match = re.fullmatch(r"([A-G])([#b]?)(-?\d)", name)
    alter = {"#": 1, "b": -1, "": 0}[match[2]]
    return 12 * (int(match[3]) + 1) + STEPS[match[1]] + alter


def expected_notes(played: str) -> list[tuple[Fraction, int, Fraction]]:
    """(start, MIDI pitch, length) for each note of a PLAYED string."""
    notes, now = [], Fraction(0)
    for item in played.split():
        name, length = item.split(":")
        length = Fraction(length)
        if name != "r":
            notes.append((now, midi_number(name), length))
        now += length
    return notes


def midi_notes(path: Path, track: int = 1) -> list[tuple[Fraction, int, Fraction]]:
    """(start, MIDI pitch, length) in quarter notes for every note of one track."""
    midi = mido.MidiFile(path)
    now, sounding, notes = 0, {}, []
    for message in midi.tracks[track]:
        now += message.time
        if message.type == "note_on" and message.velocity:
            sounding[message.note] = now
        elif message.type in ("note_on", "note_off") and message.note in sounding:
            start = sounding.pop(message.note)
            notes.append(
                (Fraction(start, midi.ticks_per_beat), message.note, Fraction(now - start, midi.ticks_per_beat))
            )
    return sorted(notes)


def midi_tempo(path: Path) -> float:
    tempos = [m.tempo for track in mido.MidiFile(path).tracks for m in track if m.type == "set_tempo"]
    return mido.tempo2bpm(tempos[0])


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, ExportReport]:
    """Every fixture tune exported once, with the chord track."""
    out = tmp_path_factory.mktemp("exported")
    text = "\n".join((FIXTURES / f"{name}.abc").read_text() for name in TUNES)
    return out, export_tunes(text, out, chords=True)


def output(exported, name: str, extension: str) -> Path:
    return exported[0] / f"{STEMS[name]}.{extension}"


# ---- fidelity: MIDI --------------------------------------------------------------------


def test_every_tune_exports_all_three_formats(exported):
    out, report = exported
    assert report.ok and report.tunes == len(TUNES)
    assert sorted(path.name for path in report.written) == sorted(
        f"{STEMS[name]}.{extension}" for name in TUNES for extension in ("mid", "musicxml", "svg")
    )
    assert not list(out.glob("*.part")) and not list(out.glob(".*"))


@pytest.mark.parametrize("name", TUNES)
def test_midi_plays_the_notes_the_abc_asks_for_in_expanded_order(exported, name):
    assert midi_notes(output(exported, name, "mid")) == expected_notes(PLAYED[name])


@pytest.mark.parametrize("name", sorted(TEMPO))
def test_midi_tempo_comes_from_q_or_a_default_for_the_meter(exported, name):
    assert midi_tempo(output(exported, name, "mid")) == pytest.approx(TEMPO[name], abs=0.01)


def test_chord_symbols_become_an_accompaniment_track(exported):
    chords = midi_notes(output(exported, "chords", "mid"), track=2)
    blocks: dict[tuple, set] = {}
    for start, pitch, length in chords:
        blocks.setdefault((start, length), set()).add(pitch % 12)
    g, d7, em, c, am, d, gdim = {7, 11, 2}, {2, 6, 9, 0}, {4, 7, 11}, {0, 4, 7}, {9, 0, 4}, {2, 6, 9}, {7, 10, 1}
    # The corpus's "Am/c", "D/f+" and "Gd" are Am/C, D/F# and Gdim; "Xyz" is no chord: Gdim goes on.
    assert sorted(blocks.items()) == [
        ((0, 2), g),
        ((2, 2), d7),
        ((4, 2), em),
        ((6, 2), c),
        ((8, 2), am),
        ((10, 2), d),
        ((12, 4), gdim),
    ]
    assert all(pitch in range(48, 72) for _, pitch, _ in chords)


def test_without_chords_the_midi_has_the_melody_only(tmp_path):
    report = export_tunes((FIXTURES / "chords.abc").read_text(), tmp_path, ["midi"])
    midi = mido.MidiFile(report.written[0])
    assert len(midi.tracks) == 2  # tempo and melody
    assert midi_notes(report.written[0]) == expected_notes(PLAYED["chords"])


def test_odd_chord_text_is_left_out_with_a_warning(exported):
    warnings = [w for w in exported[1].warnings if w.startswith("X:9 ")]
    assert warnings == ['X:9 (Chords and Rests): left out chord symbols music21 cannot read: "Xyz"']


# ---- fidelity: MusicXML and SVG --------------------------------------------------------------


@pytest.mark.parametrize("name", TUNES)
def test_musicxml_reads_back_with_the_notes_and_measures_written(exported, name):
    from music21 import converter, stream

    written = parse_tune(read_tunes((FIXTURES / f"{name}.abc").read_text())[0])
    back = converter.parse(output(exported, name, "musicxml"))
    assert len(back.parts[0].getElementsByClass(stream.Measure)) == MEASURES[name]
    assert notated(back) == notated(written)


def notated(score) -> list[tuple[int, Fraction, bool]]:
    """(MIDI pitch, length, is grace) of every note as written, chord symbols left out."""
    return [
        (n.pitch.midi, Fraction(n.quarterLength), n.duration.isGrace)
        for n in score.parts[0].recurse().notes
        if n.isNote
    ]


def test_musicxml_keeps_chord_symbols_keys_meters_and_title(exported):
    from music21 import converter, harmony, key, meter

    chords = converter.parse(output(exported, "chords", "musicxml"))
    assert [c.figure for c in chords.recurse().getElementsByClass(harmony.ChordSymbol)] == [
        "G",
        "D7",
        "Em",
        "C",
        "Am/C",
        "D/F#",
        "Gdim",
    ]
    assert chords.metadata.bestTitle == "Chords and Rests"
    keys = converter.parse(output(exported, "accidentals", "musicxml"))
    assert [k.sharps for k in keys.recurse().getElementsByClass(key.KeySignature)] == [1, -1, 1]
    meters = converter.parse(output(exported, "meters", "musicxml"))
    assert [m.ratioString for m in meters.recurse().getElementsByClass(meter.TimeSignature)] == ["3/4", "6/8", "2/4"]


def test_musicxml_marks_the_pickup_and_names_no_composer(exported):
    text = output(exported, "pickup", "musicxml").read_text()
    assert '<measure implicit="yes" number="0">' in text
    assert "Music21</creator>" not in text


@pytest.mark.parametrize("name", TUNES)
def test_svg_holds_the_engraved_staff_notes_and_measures(exported, name):
    svg = output(exported, name, "svg").read_text()
    assert svg.startswith("<svg") and 'class="staff"' in svg
    assert svg.count('class="measure"') == MEASURES[name]
    notes = len(re.findall(r"[A-Ga-g][,']*", _music(FIXTURES / f"{name}.abc")))
    assert svg.count('class="note"') == notes


def _music(path: Path) -> str:
    """The note letters of a fixture's body: no fields, chord symbols, or field-like brackets."""
    body = [line for line in path.read_text().splitlines() if not re.match(r"[A-Za-z]:", line)]
    return re.sub(r'"[^"]*"|\[[A-Z]:[^\]]*\]', "", "\n".join(body))


def test_svg_shows_chord_symbols_grace_notes_and_endings(exported):
    assert output(exported, "chords", "svg").read_text().count('class="harm"') == 7
    scales = re.findall(r'class="notehead">\s*<use [^>]*scale\(([\d.]+)', output(exported, "grace", "svg").read_text())
    assert len(scales) == 10 and scales.count(min(scales)) == 4  # grace notes are drawn small
    assert output(exported, "endings", "svg").read_text().count('class="ending ') == 4


def test_bar_number_endings_and_a_second_part_that_repeats_by_itself():
    score = parse_tune(read_tunes((FIXTURES / "engravers-jig.abc").read_text())[0])
    a_part, b_part = list(range(0, 8)), list(range(10, 18))  # bar 0 is the pickup
    assert [m.number for m in play_order(score.parts[0])] == (
        a_part + [8] + a_part + [9] + b_part + [18] + b_part + [19]
    )


def test_a_long_tune_gets_one_svg_per_page(tmp_path):
    bars = "|".join(["ABcd efga", "gfed cBAG"] * 90)
    tune = f"X:20\nT:Very Long\nM:4/4\nL:1/8\nK:G\n{bars}|]\n"
    report = export_tunes(tune, tmp_path, ["svg"])
    names = [path.name for path in report.written]
    assert len(names) >= 2 and names[:2] == ["020-very-long-1.svg", "020-very-long-2.svg"]
    assert sum(path.read_text().count('class="measure"') for path in report.written) == 180


# ---- reading ABC and working around music21 ------------------------------------------------


def test_file_names_come_from_the_x_number_and_title():
    assert slugify("The American Dwarf") == "the-american-dwarf"
    assert slugify("Dwarf, The (reel) — Ã") == "dwarf-the-reel-a"
    assert slugify("???") == "untitled"
    tunes = read_tunes("X:3\nT:The American Dwarf\nK:D\nABc|\n\nX:12\nK:G\nGAB|\n")
    assert [tune.stem for tune in tunes] == ["003-the-american-dwarf", "012-untitled"]


def test_two_tunes_with_the_same_name_get_different_files(tmp_path):
    tune = "X:1\nT:Same\nM:2/4\nL:1/8\nK:G\nG2A2|B2c2|d4|]\n"
    report = export_tunes(tune + "\n" + tune, tmp_path, ["midi"])
    assert [path.name for path in report.written] == ["001-same.mid", "001-same-b.mid"]


def test_prepare_abc_keeps_notes_after_annotations_and_adds_a_unit_length():
    text, warnings = prepare_abc('X:1\nT:t\nK:G\n">x"c "^Fine"d "Am/c"e|\n')
    assert '">x"' not in text and '"^Fine"' not in text and '"Am/C"e' in text
    assert "L:1/8\nK:G" in text and not warnings


def test_a_tune_with_neither_meter_nor_unit_length_still_exports(tmp_path):
    report = export_tunes("X:1\nT:Bare\nK:G\nGABc dedB|GABc d4|]\n", tmp_path, ["midi"])
    assert report.ok
    assert [n[2] for n in midi_notes(report.written[0])][:2] == [Fraction(1, 2)] * 2


# ---- failure paths ---------------------------------------------------------------------------


def test_a_bad_tune_among_good_ones_fails_alone(tmp_path):
    report = export_tunes((FIXTURES / "bad.abc").read_text(), tmp_path, ["midi", "svg"])
    assert [failure.number for failure in report.failed] == [11, 12]
    assert "no notes" in report.failed[0].reason
    assert "music21 cannot read it" in report.failed[1].reason
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "010-good-before.mid",
        "010-good-before.svg",
        "013-good-after.mid",
        "013-good-after.svg",
    ]


def test_cli_names_each_failed_tune_on_one_line_and_exits_1(tmp_path):
    result = CliRunner().invoke(cli, ["export", str(FIXTURES / "bad.abc"), "-o", str(tmp_path), "-f", "midi"])
    assert result.exit_code == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("Failed:")]
    assert len(failed) == 2
    assert failed[0].startswith("Failed: X:11 (No Notes At All): ")
    assert failed[1].startswith("Failed: X:12 (Unclosed Chord): music21 cannot read it")
    assert result.stderr.splitlines()[-1] == "Error: 2 of 4 tunes could not be exported (see above)"
    assert result.stdout.split() == [str(tmp_path / "010-good-before.mid"), str(tmp_path / "013-good-after.mid")]


def test_existing_files_are_kept_without_force(tmp_path):
    source = (FIXTURES / "ties.abc").read_text()
    (tmp_path / "002-ties.mid").write_bytes(b"mine")
    with pytest.raises(AbcgenError, match="--force"):
        export_tunes(source, tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["002-ties.mid"]  # nothing written
    result = CliRunner().invoke(cli, ["export", str(FIXTURES / "ties.abc"), "-o", str(tmp_path)])
    assert result.exit_code == 1 and result.stderr.startswith("Error: 1 output file exists already")
    assert (tmp_path / "002-ties.mid").read_bytes() == b"mine"
    result = CliRunner().invoke(cli, ["export", str(FIXTURES / "ties.abc"), "-o", str(tmp_path), "--force"])
    assert result.exit_code == 0
    assert (tmp_path / "002-ties.mid").read_bytes().startswith(b"MThd")


def test_an_svg_page_of_an_earlier_export_counts_as_existing(tmp_path):
    (tmp_path / "002-ties-2.svg").write_text("<svg/>")
    with pytest.raises(AbcgenError, match="exists already"):
        export_tunes((FIXTURES / "ties.abc").read_text(), tmp_path, ["svg"])


def test_pdf_without_lilypond_or_musescore_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    result = CliRunner().invoke(
        cli, ["export", str(FIXTURES / "ties.abc"), "-o", str(tmp_path), "--format", "midi,pdf"]
    )
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert "LilyPond" in result.stderr and "MuseScore" in result.stderr and "install" in result.stderr
    assert not list(tmp_path.iterdir())


def test_pdf_goes_through_musescore_when_it_is_installed(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mscore"  # writes its -o argument, as MuseScore does
    fake.write_text(f"#!{sys.executable}\nimport sys\nopen(sys.argv[2], 'wb').write(b'%PDF-1.4 fake')\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    report = export_tunes((FIXTURES / "ties.abc").read_text(), tmp_path / "out", ["pdf"])
    assert [path.name for path in report.written] == ["002-ties.pdf"]
    assert report.written[0].read_bytes() == b"%PDF-1.4 fake"


@pytest.mark.skipif(not (shutil.which("lilypond") and shutil.which("musicxml2ly")), reason="LilyPond is not installed")
def test_pdf_through_lilypond(tmp_path, monkeypatch):
    monkeypatch.setattr("abcgen.export.MUSESCORE_PROGRAMS", ())
    report = export_tunes((FIXTURES / "engravers-jig.abc").read_text(), tmp_path, ["pdf"])
    assert report.ok and report.written[0].read_bytes().startswith(b"%PDF")


def test_stdin_input(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["export", "-", "--out-dir", str(tmp_path / "new"), "-f", "midi,musicxml"],
        input=(FIXTURES / "endings.abc").read_text(),
    )
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (tmp_path / "new").iterdir()) == [
        "007-first-and-second-endings.mid",
        "007-first-and-second-endings.musicxml",
    ]
    assert "wrote 2 files for 1 tune to " in result.stderr


def test_unknown_format_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["export", str(FIXTURES / "ties.abc"), "-f", "midi,mp3"])
    assert result.exit_code == 2 and "mp3" in result.stderr


def test_input_without_tunes_is_an_error(tmp_path):
    result = CliRunner().invoke(cli, ["export", "-", "-o", str(tmp_path)], input="just words\n")
    assert result.exit_code == 1 and result.stderr.startswith("Error: no tunes found")


def test_an_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_replace(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "tune.mid", b"MThd")
    assert not list(tmp_path.iterdir())


# ---- the real corpus -----------------------------------------------------------------------


def test_real_nottingham_tunes_export(nottingham_dir, tmp_path):
    tunes = read_tunes((nottingham_dir / "jigs.abc").read_text())[:3]
    report = export_tunes("\n".join(tune.abc for tune in tunes), tmp_path, chords=True)
    assert report.ok and len(report.written) == 9
    for path in tmp_path.glob("*.mid"):
        assert len(midi_notes(path)) > 40 and midi_notes(path, track=2)
    for path in tmp_path.glob("*.svg"):
        assert path.read_text().count('class="measure"') >= 8
