//! The `pretrain` documents: short plain-English texts that state the world's facts in
//! several surface forms (profiles, stories with dialogue, towns, animals, sums, counting,
//! colours, word problems).
//!
//! Stories only ever *restate* facts: nobody gains or loses things, moves house or changes
//! friends, so every sentence agrees with the [`World`]. Word problems use nameless people
//! ("a girl") for the same reason.

use super::rng::Rng;
use super::world::*;

/// Documents in the corpus: about 2.5 MB of text.
pub(crate) const N_DOCS: usize = 12_000;

pub(crate) fn documents(w: &World, seed: u64) -> Vec<String> {
    let mut r = Rng::fork(seed, "pretrain");
    (0..N_DOCS)
        .map(|_| {
            let roll = r.below(100);
            // The mix follows the question bank: sums, counting and word problems are most of
            // its questions (every pair of operands 0 to 20 is one), and a sum is a fact of its
            // own to learn, so about half of the documents are arithmetic.
            match roll {
                0..20 => profile(w, &mut r),
                20..32 => story(w, &mut r),
                32..37 => town(w, &mut r),
                37..41 => animals(w, &mut r),
                41..73 => sums(&mut r),
                73..83 => counting(&mut r),
                83..87 => colours(w, &mut r),
                _ => word_problems(&mut r),
            }
        })
        .collect()
}

/// Sentences stating one fact about a person, in a random surface form.
pub(crate) fn person_fact(w: &World, p: usize, fact: usize, r: &mut Rng) -> String {
    let person = &w.people[p];
    let n = person.name;
    let animal = &ANIMALS[person.pet_kind];
    match fact {
        0 => {
            let town = w.places[person.place].name;
            match r.below(3) {
                0 => format!("{n} lives in {town}."),
                1 => format!("{n} lives in the town of {town}."),
                _ => format!("{n}'s home is in {town}."),
            }
        }
        1 => match r.below(3) {
            0 => format!("{n} has {} called {}.", a(animal.kind), person.pet_name),
            1 => format!(
                "{n} has a pet {k}. The {k} is called {}.",
                person.pet_name,
                k = animal.kind
            ),
            _ => format!("{} is {n}'s {}.", person.pet_name, animal.kind),
        },
        2..=4 => {
            let (o, c) = person.objects[fact - 2];
            let (o, c) = (OBJECTS[o], COLOURS[c]);
            match r.below(3) {
                0 => format!("{n}'s {o} is {c}."),
                1 => format!("{n} has {}.", a(&format!("{c} {o}"))),
                _ => format!("The {o} that {n} has is {c}."),
            }
        }
        5 => format!("{n} has {} {}.", person.count, COUNTABLES[person.countable].1),
        6 => format!("{n} is {} years old.", person.age),
        7 => {
            let c = COLOURS[person.fav_colour];
            match r.below(2) {
                0 => format!("{n}'s favourite colour is {c}."),
                _ => format!("{n} likes {c} best of all the colours."),
            }
        }
        8 => {
            let f = FOODS[person.fav_food];
            match r.below(2) {
                0 => format!("{n}'s favourite food is {f}."),
                _ => format!("{n} likes {f} more than any other food."),
            }
        }
        _ => {
            let friend = w.people[person.friend].name;
            match r.below(2) {
                0 => format!("{n}'s best friend is {friend}."),
                _ => format!("{n} and {friend} are best friends."),
            }
        }
    }
}

/// How many kinds of fact [`person_fact`] knows.
pub(crate) const PERSON_FACTS: usize = 10;

fn profile(w: &World, r: &mut Rng) -> String {
    let p = r.below(w.people.len());
    let mut facts: Vec<usize> = (0..PERSON_FACTS).collect();
    r.shuffle(&mut facts);
    facts.truncate(r.range(4, PERSON_FACTS as u32) as usize);
    let mut out = vec![format!("This is {}.", w.people[p].name)];
    out.extend(facts.into_iter().map(|f| person_fact(w, p, f, r)));
    out.join(" ")
}

fn story(w: &World, r: &mut Rng) -> String {
    let p = r.below(w.people.len());
    let person = &w.people[p];
    let friend = &w.people[person.friend];
    let n = person.name;
    let animal = &ANIMALS[person.pet_kind];
    let (o, c) = person.objects[r.below(N_OBJECTS)];
    let (o, c) = (OBJECTS[o], COLOURS[c]);
    let visit = w.places[r.below(w.places.len())].name;
    let home = w.places[person.place].name;
    let mut s = Vec::new();
    s.push(match r.below(3) {
        0 => format!("One day, {n} went to {visit} with {} the {}.", person.pet_name, animal.kind),
        1 => format!(
            "On a sunny morning, {n} took {} the {} for a walk in {visit}.",
            person.pet_name, animal.kind
        ),
        _ => format!("It was a nice day, so {n} went out to {visit}."),
    });
    s.push(format!("{n} took the {c} {o}."));
    if r.percent(60) {
        s.push(format!("{} said {}.", person.pet_name, ANIMALS[person.pet_kind].sound));
    }
    s.push(format!("In {visit}, {n} met {}, who is {n}'s best friend.", friend.name));
    // A little dialogue: the same facts as questions and answers.
    match r.below(4) {
        0 => s.push(format!("{} asked, \"What colour is your {o}, {n}?\" {n} said, \"My {o} is {c}.\"", friend.name)),
        1 => s.push(format!(
            "{} asked, \"How old are you, {n}?\" {n} said, \"I am {} years old.\"",
            friend.name, person.age
        )),
        2 => s.push(format!(
            "{} asked, \"What is your favourite food, {n}?\" {n} said, \"My favourite food is {}.\"",
            friend.name, FOODS[person.fav_food]
        )),
        _ => s.push(format!(
            "{} asked, \"How many {} do you have, {n}?\" {n} said, \"I have {} {}.\"",
            friend.name, COUNTABLES[person.countable].1, person.count, COUNTABLES[person.countable].1
        )),
    }
    if r.percent(50) {
        let (fo, fc) = friend.objects[r.below(N_OBJECTS)];
        s.push(format!(
            "{} had {} too.",
            friend.name,
            a(&format!("{} {}", COLOURS[fc], OBJECTS[fo]))
        ));
    }
    if r.percent(50) {
        s.push(format!(
            "They ate some {} because {} is {n}'s favourite food.",
            FOODS[person.fav_food], FOODS[person.fav_food]
        ));
    }
    s.push(format!("In the evening, {n} went home to {home}."));
    s.join(" ")
}

fn town(w: &World, r: &mut Rng) -> String {
    let i = r.below(w.places.len());
    let place = &w.places[i];
    let x = place.name;
    let (phrase, noun) = LANDMARKS[place.landmark];
    let people: Vec<String> = w.residents(i).into_iter().map(String::from).collect();
    let verb = if people.len() == 1 { "lives" } else { "live" };
    let mut s = vec![
        match r.below(3) {
            0 => format!("{x} is a small town."),
            1 => format!("{x} is a friendly town."),
            _ => format!("There is a town called {x}."),
        },
        match r.below(2) {
            0 => format!("{x} has {phrase}."),
            _ => format!("In {x} there is {phrase}."),
        },
        format!("{} {verb} in {x}.", and_list(&people)),
    ];
    let who = people[r.below(people.len())].clone();
    s.push(format!("{who} likes to visit the {noun}."));
    s.join(" ")
}

fn animals(w: &World, r: &mut Rng) -> String {
    let ids: Vec<usize> = (0..ANIMALS.len()).collect();
    let mut s = Vec::new();
    let k = r.range(2, 4) as usize;
    for k in r.sample(&ids, k) {
        let an = &ANIMALS[k];
        let kind = capitalise(&a(an.kind));
        s.push(match an.legs {
            0 => format!("{kind} has no legs."),
            n => format!("{kind} has {n} legs."),
        });
        s.push(match r.below(2) {
            0 => format!("{kind} says {}.", an.sound),
            _ => format!("{} say {}.", capitalise(an.plural), an.sound),
        });
        let owners: Vec<&Person> = w.people.iter().filter(|p| p.pet_kind == k).collect();
        if !owners.is_empty() {
            let p = owners[r.below(owners.len())];
            s.push(format!("{} has {} called {}.", p.name, a(an.kind), p.pet_name));
        }
    }
    s.join(" ")
}

fn sums(r: &mut Rng) -> String {
    let mut s = Vec::new();
    match r.below(4) {
        0 => {
            s.push("Here are some sums.".to_string());
            for _ in 0..r.range(5, 10) {
                let (x, y) = (r.range(0, MAX_OPERAND), r.range(0, MAX_OPERAND));
                s.push(format!("{x} plus {y} is {}.", x + y));
            }
        }
        1 => {
            s.push("Here are some take-aways.".to_string());
            for _ in 0..r.range(5, 10) {
                let x = r.range(0, MAX_OPERAND);
                let y = r.range(0, x);
                s.push(format!("{x} minus {y} is {}.", x - y));
            }
        }
        2 => {
            let x = r.range(0, MAX_OPERAND);
            s.push(format!("Let us add {x} to some numbers."));
            let start = r.range(0, MAX_OPERAND - 10);
            for y in start..=start + 10 {
                s.push(format!("{x} plus {y} is {}.", x + y));
            }
        }
        _ => {
            for _ in 0..r.range(4, 8) {
                let x = r.range(0, MAX_OPERAND);
                let y = r.range(0, MAX_OPERAND);
                if r.percent(50) {
                    s.push(format!("If you add {x} and {y}, you get {}.", x + y));
                } else {
                    let (big, small) = (x.max(y), x.min(y));
                    s.push(format!("If you take {small} from {big}, you get {}.", big - small));
                }
            }
        }
    }
    s.join(" ")
}

fn counting(r: &mut Rng) -> String {
    let mut s = Vec::new();
    let from = r.range(0, MAX_COUNT - 10);
    let to = from + r.range(3, 10);
    let nums: Vec<String> = (from..=to).map(|n| n.to_string()).collect();
    s.push(format!("Let us count from {from} to {to}: {}.", nums.join(", ")));
    for _ in 0..r.range(2, 5) {
        let n = r.range(1, MAX_COUNT - 1);
        s.push(match r.below(4) {
            0 => format!("After {n} comes {}.", n + 1),
            1 => format!("Before {n} comes {}.", n - 1),
            2 => format!("The number after {n} is {}.", n + 1),
            _ => format!("The number before {n} is {}.", n - 1),
        });
    }
    s.join(" ")
}

fn colours(w: &World, r: &mut Rng) -> String {
    let mut s = Vec::new();
    let k = r.range(3, 6) as usize;
    for &(thing, colour) in r.sample(THING_COLOURS, k).iter() {
        s.push(format!("{} is {colour}.", capitalise(thing)));
    }
    let p = &w.people[r.below(w.people.len())];
    s.push(format!("{}'s favourite colour is {}.", p.name, COLOURS[p.fav_colour]));
    s.join(" ")
}

/// Subjects of word problems: nameless, so the problems never contradict a person's facts.
const SUBJECTS: &[(&str, &str)] =
    &[("A girl", "she"), ("A boy", "he"), ("A woman", "she"), ("A man", "he")];

pub(crate) fn word_problem_add(subject: usize, x: u32, y: u32, item: usize) -> (String, String) {
    let (who, pron) = SUBJECTS[subject];
    let items = COUNTABLES[item].1;
    (
        format!("{who} has {x} {items} and finds {y} more."),
        format!("{} has {} {items} now.", capitalise(pron), x + y),
    )
}

pub(crate) fn word_problem_sub(subject: usize, x: u32, y: u32, item: usize) -> (String, String) {
    let (who, _) = SUBJECTS[subject];
    let items = COUNTABLES[item].1;
    (format!("{who} has {x} {items} and gives away {y}."), format!("{} {items} are left.", x - y))
}

pub(crate) const N_SUBJECTS: usize = SUBJECTS.len();

fn word_problems(r: &mut Rng) -> String {
    let mut s = Vec::new();
    for _ in 0..r.range(2, 4) {
        let subject = r.below(N_SUBJECTS);
        let item = r.below(COUNTABLES.len());
        let x = r.range(3, 12);
        let (setup, result) = if r.percent(50) {
            word_problem_add(subject, x, r.range(1, 9), item)
        } else {
            // At least 2 left, so "are left" always takes a plural.
            word_problem_sub(subject, x, r.range(1, x - 2), item)
        };
        s.push(format!("{setup} {result}"));
    }
    s.join(" ")
}
