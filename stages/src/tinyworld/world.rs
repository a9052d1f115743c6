//! [`World`]: the people, places, pets and things of tinyworld, drawn from fixed pools by the
//! seed. Everything the datasets say is read from one `World`, so pretraining text, chats and
//! prompts can never disagree.

use super::rng::Rng;

/// People in a world, and towns they live in.
pub(crate) const N_PEOPLE: usize = 30;
pub(crate) const N_PLACES: usize = 8;
/// Objects each person owns (each with a colour).
pub(crate) const N_OBJECTS: usize = 3;
/// Addition and subtraction use operands in `0..=MAX_OPERAND`.
pub(crate) const MAX_OPERAND: u32 = 20;
/// "What comes after/before n?" uses `0..=MAX_COUNT`.
pub(crate) const MAX_COUNT: u32 = 50;

pub(crate) const PEOPLE_POOL: &[&str] = &[
    "Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Leo", "Zoe", "Emma", "Jack", "Lucy", "Noah",
    "Ella", "Finn", "Ruby", "Owen", "Luke", "Chloe", "Adam", "Isla", "Dan", "Rosa", "Eli", "Nora",
    "Hugo", "Jake", "Kate", "Liam", "Maya", "Nick", "Olga", "Paul", "Rita", "Sean", "Tara", "Umar",
    "Vera", "Yara", "Alex", "Beth", "Carl", "Dora", "Evan", "Gus", "Hana", "Ian", "Jill", "Kai",
    "Lena", "Nina", "Otto", "Pia", "Suki", "Theo", "Ada", "Bruno", "Cleo", "Dev", "Elsa", "Felix",
];

pub(crate) const PLACE_POOL: &[&str] = &[
    "Millbrook",
    "Oakvale",
    "Redhill",
    "Sunford",
    "Pinewood",
    "Brookside",
    "Fairview",
    "Lakeside",
    "Stonebridge",
    "Westfield",
    "Ashdown",
    "Greenwick",
    "Hollowmere",
    "Kingsbay",
    "Maplefield",
    "Northcliff",
    "Riverton",
    "Sandholm",
    "Thornbury",
    "Windmere",
    "Elmstead",
    "Foxley",
    "Ironwood",
    "Larkhill",
];

pub(crate) const PET_NAME_POOL: &[&str] = &[
    "Rex", "Spot", "Bella", "Daisy", "Coco", "Buddy", "Luna", "Pip", "Pepper", "Rusty", "Snowy",
    "Bubbles", "Shadow", "Patch", "Socks", "Dotty", "Poppy", "Sunny", "Ziggy", "Fluffy", "Sparky",
    "Jasper", "Clover", "Hazel", "Misty", "Bramble", "Nibbles", "Scout", "Boots", "Fidget",
    "Pebble", "Whiskers", "Tinker", "Comet", "Dash", "Ollie", "Bingo", "Rocky", "Fuzzy", "Noodle",
];

pub(crate) const OBJECTS: &[&str] = &[
    "ball", "hat", "kite", "cup", "book", "bike", "box", "bag", "scarf", "boat", "drum", "lamp",
    "coat", "umbrella",
];

pub(crate) const COLOURS: &[&str] = &[
    "red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white", "grey",
];

pub(crate) const FOODS: &[&str] = &[
    "bread", "cake", "cheese", "soup", "rice", "pie", "pasta", "pizza", "salad", "porridge",
    "honey", "toast",
];

/// Things people have a number of: (singular, plural).
pub(crate) const COUNTABLES: &[(&str, &str)] = &[
    ("apple", "apples"),
    ("pear", "pears"),
    ("plum", "plums"),
    ("egg", "eggs"),
    ("marble", "marbles"),
    ("shell", "shells"),
    ("sticker", "stickers"),
    ("coin", "coins"),
    ("pencil", "pencils"),
    ("stamp", "stamps"),
];

/// What a town is known for: (phrase, the noun a checkable answer uses).
pub(crate) const LANDMARKS: &[(&str, &str)] = &[
    ("a big river", "river"),
    ("an old mill", "mill"),
    ("a tall tower", "tower"),
    ("a busy market", "market"),
    ("a quiet lake", "lake"),
    ("a stone bridge", "bridge"),
    ("a small zoo", "zoo"),
    ("a big park", "park"),
    ("a sandy beach", "beach"),
    ("an old castle", "castle"),
    ("a famous bakery", "bakery"),
    ("a large library", "library"),
];

pub(crate) struct Animal {
    pub kind: &'static str,
    pub plural: &'static str,
    pub legs: u32,
    pub sound: &'static str,
    /// Can be someone's pet.
    pub pet: bool,
}

/// Real-world facts about animals; the same in every world.
pub(crate) const ANIMALS: &[Animal] = &[
    Animal { kind: "dog", plural: "dogs", legs: 4, sound: "woof", pet: true },
    Animal { kind: "cat", plural: "cats", legs: 4, sound: "meow", pet: true },
    Animal { kind: "cow", plural: "cows", legs: 4, sound: "moo", pet: false },
    Animal { kind: "duck", plural: "ducks", legs: 2, sound: "quack", pet: true },
    Animal { kind: "sheep", plural: "sheep", legs: 4, sound: "baa", pet: false },
    Animal { kind: "horse", plural: "horses", legs: 4, sound: "neigh", pet: true },
    Animal { kind: "pig", plural: "pigs", legs: 4, sound: "oink", pet: true },
    Animal { kind: "hen", plural: "hens", legs: 2, sound: "cluck", pet: true },
    Animal { kind: "frog", plural: "frogs", legs: 4, sound: "croak", pet: true },
    Animal { kind: "owl", plural: "owls", legs: 2, sound: "hoot", pet: false },
    Animal { kind: "mouse", plural: "mice", legs: 4, sound: "squeak", pet: true },
    Animal { kind: "bee", plural: "bees", legs: 6, sound: "buzz", pet: false },
    Animal { kind: "lion", plural: "lions", legs: 4, sound: "roar", pet: false },
    Animal { kind: "snake", plural: "snakes", legs: 0, sound: "hiss", pet: false },
];

/// Colours of common things; the same in every world: (thing, colour).
pub(crate) const THING_COLOURS: &[(&str, &str)] = &[
    ("the sky", "blue"),
    ("grass", "green"),
    ("snow", "white"),
    ("the sun", "yellow"),
    ("a banana", "yellow"),
    ("coal", "black"),
    ("milk", "white"),
    ("a strawberry", "red"),
    ("a carrot", "orange"),
    ("chocolate", "brown"),
    ("a leaf", "green"),
    ("a flamingo", "pink"),
];

pub(crate) struct Person {
    pub name: &'static str,
    /// Index into [`World::places`].
    pub place: usize,
    /// Index into [`ANIMALS`].
    pub pet_kind: usize,
    pub pet_name: &'static str,
    /// (index into [`OBJECTS`], index into [`COLOURS`]), distinct objects.
    pub objects: Vec<(usize, usize)>,
    /// Index into [`COUNTABLES`] and how many.
    pub countable: usize,
    pub count: u32,
    pub age: u32,
    pub fav_colour: usize,
    pub fav_food: usize,
    /// Index into [`World::people`]; friendship is mutual.
    pub friend: usize,
}

pub(crate) struct Place {
    pub name: &'static str,
    /// Index into [`LANDMARKS`]; distinct per place.
    pub landmark: usize,
}

pub(crate) struct World {
    pub people: Vec<Person>,
    pub places: Vec<Place>,
    /// Names from the pool that are *not* in this world (for "I do not know anyone called ...").
    pub strangers: Vec<&'static str>,
}

impl World {
    pub(crate) fn new(seed: u64) -> World {
        let mut r = Rng::fork(seed, "world");
        let names = r.sample(PEOPLE_POOL, N_PEOPLE);
        let strangers = PEOPLE_POOL.iter().copied().filter(|n| !names.contains(n)).collect();
        let place_names = r.sample(PLACE_POOL, N_PLACES);
        let landmarks = r.sample(&(0..LANDMARKS.len()).collect::<Vec<_>>(), N_PLACES);
        let places = place_names
            .into_iter()
            .zip(landmarks)
            .map(|(name, landmark)| Place { name, landmark })
            .collect();
        let pet_names = r.sample(PET_NAME_POOL, N_PEOPLE);
        let pet_kinds: Vec<usize> = (0..ANIMALS.len()).filter(|&i| ANIMALS[i].pet).collect();

        // Best friends: pair people up in a random order (N_PEOPLE is even).
        let mut order: Vec<usize> = (0..N_PEOPLE).collect();
        r.shuffle(&mut order);
        let mut friend = vec![0; N_PEOPLE];
        for pair in order.chunks(2) {
            friend[pair[0]] = pair[1];
            friend[pair[1]] = pair[0];
        }
        // Every town has people: deal the towns out like cards.
        let mut homes: Vec<usize> = (0..N_PEOPLE).map(|i| i % N_PLACES).collect();
        r.shuffle(&mut homes);

        let object_ids: Vec<usize> = (0..OBJECTS.len()).collect();
        let people = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let objects = r
                    .sample(&object_ids, N_OBJECTS)
                    .into_iter()
                    .map(|o| (o, r.below(COLOURS.len())))
                    .collect();
                Person {
                    name,
                    place: homes[i],
                    pet_kind: *r.pick(&pet_kinds),
                    pet_name: pet_names[i],
                    objects,
                    countable: r.below(COUNTABLES.len()),
                    count: r.range(2, 12),
                    age: r.range(5, 60),
                    fav_colour: r.below(COLOURS.len()),
                    fav_food: r.below(FOODS.len()),
                    friend: friend[i],
                }
            })
            .collect();
        World { people, places, strangers }
    }

    pub(crate) fn residents(&self, place: usize) -> Vec<&'static str> {
        self.people.iter().filter(|p| p.place == place).map(|p| p.name).collect()
    }

    /// The colour of a person's object, if they have one.
    pub(crate) fn colour_of(&self, person: usize, object: usize) -> Option<&'static str> {
        self.people[person].objects.iter().find(|&&(o, _)| o == object).map(|&(_, c)| COLOURS[c])
    }
}

/// "a" or "an" before a word.
pub(crate) fn a(word: &str) -> String {
    let an = word.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']);
    format!("{} {word}", if an { "an" } else { "a" })
}

/// "Tom, Anna and Ben".
pub(crate) fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

pub(crate) fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn pools_are_large_enough_and_do_not_share_words() {
        assert!(
            PEOPLE_POOL.len() > N_PEOPLE
                && PET_NAME_POOL.len() >= N_PEOPLE
                && PLACE_POOL.len() >= N_PLACES
        );
        assert!(LANDMARKS.len() >= N_PLACES);
        // The grader tells answer kinds apart by which pool a word is in.
        let pools: Vec<Vec<String>> = vec![
            PEOPLE_POOL.iter().map(|s| s.to_lowercase()).collect(),
            PLACE_POOL.iter().map(|s| s.to_lowercase()).collect(),
            PET_NAME_POOL.iter().map(|s| s.to_lowercase()).collect(),
            OBJECTS.iter().map(|s| s.to_string()).collect(),
            COLOURS.iter().map(|s| s.to_string()).collect(),
            FOODS.iter().map(|s| s.to_string()).collect(),
            COUNTABLES.iter().flat_map(|(a, b)| [a.to_string(), b.to_string()]).collect(),
            LANDMARKS.iter().map(|(_, n)| n.to_string()).collect(),
            ANIMALS
                .iter()
                .flat_map(|a| [a.kind.to_string(), a.plural.to_string()])
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            ANIMALS.iter().map(|a| a.sound.to_string()).collect(),
        ];
        let mut seen = BTreeSet::new();
        for pool in &pools {
            for w in pool {
                assert!(seen.insert(w.clone()), "`{w}` is in two pools (or twice in one)");
            }
        }
    }

    #[test]
    fn world_is_well_formed() {
        let w = World::new(3);
        assert_eq!(w.people.len(), N_PEOPLE);
        for (i, p) in w.people.iter().enumerate() {
            assert_ne!(p.friend, i);
            assert_eq!(w.people[p.friend].friend, i, "friendship is mutual");
            let objs: BTreeSet<usize> = p.objects.iter().map(|o| o.0).collect();
            assert_eq!(objs.len(), N_OBJECTS);
            assert!(ANIMALS[p.pet_kind].pet);
        }
        for place in 0..N_PLACES {
            assert!(!w.residents(place).is_empty());
        }
        let pet_names: BTreeSet<_> = w.people.iter().map(|p| p.pet_name).collect();
        assert_eq!(pet_names.len(), N_PEOPLE);
        assert_eq!(w.strangers.len(), PEOPLE_POOL.len() - N_PEOPLE);
    }

    #[test]
    fn articles_and_lists() {
        assert_eq!(a("orange kite"), "an orange kite");
        assert_eq!(a("red ball"), "a red ball");
        assert_eq!(and_list(&["A".into(), "B".into(), "C".into()]), "A, B and C");
        assert_eq!(and_list(&["A".into()]), "A");
    }
}
